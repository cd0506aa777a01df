import { createHash, createHmac, hkdfSync, type KeyObject, randomUUID } from 'node:crypto';

import { type RawBuilder, sql } from 'kysely';

import { events } from '../core/events.ts';
import { GroupCommit } from '../db/group-commit.ts';
import { precompiledByParts } from '../db/precompiled.ts';
import type { Db, Executor } from '../db/schema.ts';
import { canonicalJson } from './canonical-json.ts';
import { KmsError } from './errors.ts';

export interface AuditEvent {
  principal: string;
  action: string;
  keyId?: string | null;
  keyVersion?: number | null;
  outcome: 'success' | 'denied' | 'failure';
  errorCode?: string | null;
  /** Serials, profiles, encryption contexts: never key material, PINs or tokens. */
  context?: Record<string, string | number | boolean | null>;
}

/** The KEK whose material keys the chain (purpose `audit`); created with the hierarchy. */
export const AUDIT_KEK = 'audit-chain';

const GENESIS = Buffer.alloc(32);

/** The hashed fields of one event; `ts` is the ISO text that is hashed (see the two formats). */
export interface HashInput {
  seq: number;
  event_id: string;
  ts: string;
  principal: string;
  action: string;
  key_id: string | null;
  key_version: number | null;
  outcome: AuditEvent['outcome'];
  error_code: string | null;
  context: unknown;
}

function hashedBody(prevHash: Uint8Array, e: HashInput): Buffer[] {
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64BE(BigInt(e.seq));
  const body = canonicalJson({
    seq: e.seq,
    event_id: e.event_id,
    ts: e.ts,
    principal: e.principal,
    action: e.action,
    key_id: e.key_id,
    key_version: e.key_version,
    outcome: e.outcome,
    error_code: e.error_code,
    context: e.context,
  });
  return [seq, Buffer.from(prevHash), Buffer.from(body, 'utf8')];
}

/**
 * The format of events written before the chain was keyed (`keyed_from` in audit_head): plain
 * SHA-256 over a millisecond timestamp. Anyone can recompute it, so only signed checkpoints
 * protect these events; they are kept as a legacy prefix rather than re-hashed, so that old
 * checkpoints and exported copies stay valid.
 */
export function legacyEventHash(prevHash: Uint8Array, e: HashInput): Buffer {
  const h = createHash('sha256').update('keyward-audit-v1');
  for (const part of hashedBody(prevHash, e)) h.update(part);
  return h.digest();
}

/** `2025-01-31T12:00:00.123456Z`: the database's full precision, as hashed by the keyed format. */
const TS_MICROS = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const tsText = (expr: string) => sql.raw(`to_char(${expr} AT TIME ZONE 'UTC', ${TS_MICROS})`);

/**
 * A condition on a key that must still hold when a grouped event is appended: the key is Enabled
 * and its policy is the one the caller evaluated (compared as jsonb). If not, nothing in the batch
 * is written and the caller learns which keys failed.
 */
export interface KeyGuard {
  keyId: string;
  /** The policy as read from kms_keys.policy (null: none). */
  policy: unknown;
}

/**
 * Rows of another layer written by the statement that appends their events, so that they commit
 * with the events or not at all (the signing core's serial reservations: a reservation and the key
 * use it is for in one flushed commit). The audit log knows nothing of these rows.
 *
 * The statement is compiled once per process for each set of writers in a batch
 * (db/precompiled.ts): `vetoes` and `writes` are built once, from stand-ins for what `parameters`
 * returns, and must not look at them; each batch sends its own values in the same text.
 */
export interface AttachedWrites<C, P extends unknown[] = unknown[]> {
  /** Names the statement's CTEs for this writer (an SQL identifier, unique per writer). */
  readonly name: string;
  /**
   * A batch's values for the writer's SQL, always as many: arrays with an element per item (so the
   * text is the same for any batch size), in the order `vetoes` and `writes` take them.
   */
  parameters(items: readonly C[]): P;
  /**
   * A query yielding `i`, the 0-based positions in the batch's items of those that must not be
   * written (a blocked key). Any such item stops the whole statement; its event is answered
   * `vetoed` and the others are sent again without it.
   */
  vetoes(...params: P): RawBuilder<unknown>;
  /**
   * The data-modifying statements that write the items (each its own CTE); they must write only
   * where `appended` holds.
   */
  writes(appended: RawBuilder<unknown>, ...params: P): RawBuilder<unknown> | readonly RawBuilder<unknown>[];
}

/** One item for an attached writer, with the event it goes with. */
export interface Attached<C> {
  writer: AttachedWrites<C>;
  item: C;
}

/**
 * What a grouped append answers: the event's seq; that its key guard no longer held; or that its
 * attached rows were vetoed (nothing of it written).
 */
export type GroupedAppend = { seq: number } | { refused: true } | { vetoed: true };

interface PendingEvent {
  input: Omit<HashInput, 'seq'>;
  guard?: KeyGuard;
  attached?: Attached<unknown>;
}

/** Attempts at one batch before giving up: each lost race costs one statement. */
const MAX_BATCH_ATTEMPTS = 100;

/** Microseconds since the epoch, strictly increasing in this process (hashed as text, see TS_MICROS). */
let lastMicros = 0;
function nowMicrosText(): string {
  // The sub-millisecond digits come from the monotonic clock: they order events within a millisecond.
  let us = Date.now() * 1000 + Math.floor((performance.now() % 1) * 1000);
  if (us <= lastMicros) us = lastMicros + 1;
  lastMicros = us;
  const iso = new Date(Math.floor(us / 1000)).toISOString(); // …ss.mmmZ
  return `${iso.slice(0, 23)}${String(us % 1000).padStart(3, '0')}Z`;
}

/** Runs fn in the caller's transaction when there is one, otherwise in a new one. */
export async function inTransaction<T>(db: Executor, fn: (trx: Executor) => Promise<T>): Promise<T> {
  if (db.isTransaction) return fn(db);
  return db.transaction().execute(fn);
}

export type AuditProblem =
  'deleted' | 'inserted' | 'inserted-or-reordered' | 'edited' | 'head-mismatch' | 'rewritten' | 'bad-checkpoint';

export interface AuditVerification {
  ok: boolean;
  /** Events checked: 1 … headSeq, the head read before the walk began. */
  events: number;
  headSeq: number;
  /** The first keyed event; events before it are the unkeyed legacy prefix (null: none keyed). */
  keyedFrom: number | null;
  /** The first row that breaks the chain, and how. */
  firstBad?: { seq: number; problem: AuditProblem; detail: string };
}

/** An event row as read back: the hashed fields, its time in microseconds, and its links. */
type StoredEvent = Omit<HashInput, 'seq' | 'ts'> & {
  seq: string | number;
  ts_us: string;
  prev_hash: Uint8Array;
  hash: Uint8Array;
};

/**
 * The audit log: a hash chain whose links are HMAC-SHA256 under a key held in the key hierarchy
 * (the `audit-chain` KEK), so someone who can write to the database but holds no key can't
 * recompute them. Timestamps are hashed at the database's full (microsecond) precision.
 */
export class AuditLog {
  private readonly key: Buffer;
  /** The head this process last saw; only a guess, checked by the statement that moves it. */
  private head: { seq: number; hash: Buffer } | undefined;
  private readonly groups = new WeakMap<Executor, GroupCommit<PendingEvent, GroupedAppend>>();

  /** `material`: the plaintext of the audit KEK; the MAC key is derived from it (HKDF-SHA256). */
  constructor(material: KeyObject) {
    this.key = Buffer.from(hkdfSync('sha256', material.export(), Buffer.alloc(0), 'keyward audit chain v2', 32));
  }

  /** HMAC-SHA256(key, "keyward-audit-v2" ‖ u64 seq ‖ prev_hash ‖ JCS(event)). */
  hash(prevHash: Uint8Array, e: HashInput): Buffer {
    const h = createHmac('sha256', this.key).update('keyward-audit-v2');
    for (const part of hashedBody(prevHash, e)) h.update(part);
    return h.digest();
  }

  /**
   * Appends one event. Inside the caller's transaction it takes the head row lock (gap-free
   * sequence numbers in commit order across replicas) and commits with the caller. Outside one it
   * is group-committed (see appendGrouped). If this fails, the operation fails.
   */
  async append(db: Executor, event: AuditEvent): Promise<number> {
    if (!db.isTransaction) {
      const out = await this.appendGrouped(db, event);
      if (!('seq' in out)) throw new KmsError('AuditFailure', 'an unguarded audit event was refused');
      return out.seq;
    }
    const head = await sql<{ seq: string | number; hash: Uint8Array; now: string }>`
      SELECT seq, hash, ${tsText('clock_timestamp()')} AS now FROM audit_head WHERE id = 1 FOR UPDATE`.execute(db);
    const row = head.rows[0];
    if (!row) throw new KmsError('AuditFailure', 'the audit log head is missing');
    const input: HashInput = { seq: Number(row.seq) + 1, ...eventInput(event, row.now) };
    const hash = this.hash(row.hash, input);
    // The event and the new head in one statement: one round trip fewer for every signature.
    await db
      .with('head', (q) => q.updateTable('audit_head').set({ seq: input.seq, hash }).where('id', '=', 1))
      .insertInto('audit_events')
      .values({ ...input, context: JSON.stringify(input.context), prev_hash: row.hash, hash })
      .execute();
    publish(event);
    return input.seq;
  }

  /**
   * Group commit of the chain: events that arrive while a batch is being written go together in
   * the next one, as one autocommitted statement that inserts them all and moves the head once,
   * only if the head is still the one their links were computed from (and every key guard holds).
   * No lock is held across round trips, so signers on every replica append concurrently; a batch
   * that lost the race to another writer is re-linked to the head that statement read and sent
   * again. Timestamps are this process's clock at microsecond precision (strictly increasing here).
   */
  async appendGrouped<C = never>(
    db: Executor,
    event: AuditEvent,
    guard?: KeyGuard,
    attached?: Attached<C>,
  ): Promise<GroupedAppend> {
    let group = this.groups.get(db);
    if (!group) {
      group = new GroupCommit((items) => this.writeBatch(db, items));
      this.groups.set(db, group);
    }
    const out = await group.submit({
      input: eventInput(event, nowMicrosText()),
      guard,
      ...(attached ? { attached: attached as Attached<unknown> } : {}),
    });
    if ('seq' in out) publish(event);
    return out;
  }

  private async writeBatch(db: Executor, items: PendingEvent[]): Promise<GroupedAppend[]> {
    const answers: (GroupedAppend | undefined)[] = items.map(() => undefined);
    let pending = items.map((_, i) => i);
    for (let attempt = 0; attempt < MAX_BATCH_ATTEMPTS && pending.length > 0; attempt++) {
      this.head ??= await readHead(db);
      const base = this.head;
      let prev: Buffer = base.hash;
      const rows = pending.map((i, k) => {
        const input: HashInput = { ...items[i]!.input, seq: base.seq + 1 + k };
        const prevHash = prev;
        prev = this.hash(prevHash, input);
        return { input, prevHash, hash: prev };
      });
      const guards = pending.flatMap((i) => (items[i]!.guard ? [items[i]!.guard!] : []));
      const attached = attachedGroups(items, pending);
      const last = rows[rows.length - 1]!;
      const out = await appendStatement(
        db,
        attached.map((a) => ({ key: a.writer, values: a.writer.parameters(a.items) })),
        rows.map((r) => String(r.input.seq)),
        rows.map((r) => r.input.event_id),
        rows.map((r) => r.input.ts),
        rows.map((r) => r.input.principal),
        rows.map((r) => r.input.action),
        rows.map((r) => r.input.key_id),
        rows.map((r) => r.input.key_version),
        rows.map((r) => r.input.outcome),
        rows.map((r) => r.input.error_code),
        rows.map((r) => JSON.stringify(r.input.context)),
        rows.map((r) => r.prevHash.toString('hex')),
        rows.map((r) => r.hash.toString('hex')),
        guards.map((g) => g.keyId),
        guards.map((g) => JSON.stringify(g.policy ?? null)),
        last.input.seq,
        last.hash.toString('hex'),
        base.seq,
        base.hash.toString('hex'),
      );
      const r = out[0];
      if (!r) throw new KmsError('AuditFailure', 'the audit log head is missing');
      if (r.appended) {
        this.head = { seq: last.input.seq, hash: last.hash };
        pending.forEach((i, k) => (answers[i] = { seq: rows[k]!.input.seq }));
        pending = [];
        break;
      }
      // Refused keys and vetoed rows: those events are answered and left out; the rest go again.
      const refused = new Set(r.refused);
      if (refused.size > 0) {
        for (const i of pending)
          if (items[i]!.guard && refused.has(items[i]!.guard!.keyId)) answers[i] = { refused: true };
      }
      const vetoed = attached.flatMap((a, w) => (r.vetoed[w] ?? []).map((k) => a.pending[k]!));
      for (const i of vetoed) answers[i] = { vetoed: true };
      const leftOut = refused.size > 0 || vetoed.length > 0;
      if (leftOut) pending = pending.filter((i) => answers[i] === undefined);
      // The head as of this statement's snapshot: newer than ours, or (when the winner committed
      // while this statement waited for its row lock) still stale, which the next attempt finds.
      this.head = { seq: Number(r.seq), hash: Buffer.from(r.hash) };
      if (!leftOut && this.head.seq === base.seq && this.head.hash.equals(base.hash)) this.head = undefined;
    }
    if (pending.length > 0) {
      this.head = undefined;
      throw new KmsError('AuditFailure', `the audit log head kept moving; ${pending.length} events not appended`);
    }
    return answers as GroupedAppend[];
  }

  /**
   * Walks the chain up to the head read first: every event up to that head had committed when it
   * was read (the head moves in the event's own statement), so a server appending meanwhile can't
   * make the walk see a gap. Names the first row that was edited, deleted, inserted or moved.
   */
  async verify(db: Db, onEvent?: (seq: number, hash: Uint8Array) => void, pageSize = 5000): Promise<AuditVerification> {
    const head = await db
      .selectFrom('audit_head')
      .select(['seq', 'hash', 'keyed_from'])
      .where('id', '=', 1)
      .executeTakeFirst();
    if (!head) throw new KmsError('AuditFailure', 'the audit log head is missing');
    const headSeq = Number(head.seq);
    const keyedFrom = head.keyed_from === null ? null : Number(head.keyed_from);
    const fail = (events: number, seq: number, problem: AuditProblem, detail: string): AuditVerification => ({
      ok: false,
      events,
      headSeq,
      keyedFrom,
      firstBad: { seq, problem, detail },
    });
    // This process holds the chain key, so the chain was keyed when the key was made.
    if (keyedFrom === null || keyedFrom < 1 || keyedFrom > headSeq + 1)
      return fail(
        0,
        Math.max(1, Math.min(headSeq, keyedFrom ?? 1)),
        'head-mismatch',
        `the audit head says the chain is keyed from ${keyedFrom ?? 'nowhere'}, but its key exists and the head is at event ${headSeq}: the head was altered`,
      );

    let prev: Uint8Array = GENESIS;
    let beforePrev: Uint8Array | undefined;
    let expected = 1;
    while (expected <= headSeq) {
      const rows = await sql<StoredEvent>`
        SELECT seq, event_id, ${tsText('ts')} AS ts_us, principal, action, key_id, key_version, outcome,
          error_code, context, prev_hash, hash
        FROM audit_events WHERE seq >= ${expected} AND seq <= ${headSeq} ORDER BY seq LIMIT ${pageSize}`.execute(db);
      if (rows.rows.length === 0) break;
      for (const r of rows.rows) {
        const seq = Number(r.seq);
        const count = expected - 1;
        if (seq !== expected)
          return fail(count, expected, 'deleted', `event ${expected} is missing (next present is ${seq})`);
        const keyed = seq >= keyedFrom;
        const input: HashInput = {
          ...r,
          seq,
          // The legacy format hashed milliseconds (ISO 8601 as Date#toISOString writes it).
          ts: keyed ? r.ts_us : `${r.ts_us.slice(0, 23)}Z`,
        };
        const ownHash = (prevHash: Uint8Array) =>
          keyed ? this.hash(prevHash, input) : legacyEventHash(prevHash, input);
        if (!Buffer.from(r.prev_hash).equals(Buffer.from(prev))) {
          // The row before this one links to what this one should: that row was put in between.
          if (!keyed && beforePrev && Buffer.from(r.prev_hash).equals(Buffer.from(beforePrev)))
            return fail(
              count - 1,
              seq - 1,
              'inserted',
              `event ${seq - 1} was inserted: event ${seq} follows event ${seq - 2}`,
            );
          // The first keyed event is genuine but no longer follows the prefix: the prefix changed.
          if (keyed && seq === keyedFrom && seq > 1 && ownHash(r.prev_hash).equals(Buffer.from(r.hash)))
            return fail(
              0,
              1,
              'rewritten',
              `events 1–${seq - 1} (unkeyed, from before the chain key) were rewritten: event ${seq}, the first keyed one, no longer follows them`,
            );
          return fail(count, seq, 'inserted-or-reordered', `event ${seq} does not follow event ${seq - 1}`);
        }
        if (!ownHash(prev).equals(Buffer.from(r.hash)))
          return fail(
            count,
            seq,
            'edited',
            keyed
              ? `event ${seq} does not match its MAC: it was changed, or put in, after it was written`
              : `event ${seq} was changed after it was written`,
          );
        beforePrev = prev;
        prev = r.hash;
        onEvent?.(seq, r.hash);
        expected = seq + 1;
      }
    }
    const count = expected - 1;
    if (count < headSeq)
      return fail(count, expected, 'deleted', `the chain ends at event ${count} but the head names event ${headSeq}`);
    if (!Buffer.from(head.hash).equals(Buffer.from(prev)))
      return fail(count, headSeq, 'head-mismatch', `the head's hash is not the hash of event ${headSeq}`);
    return { ok: true, events: count, headSeq, keyedFrom };
  }
}

interface AppendedRow {
  appended: boolean;
  refused: string[];
  vetoed: number[][];
  seq: string | number;
  hash: Uint8Array;
}

/**
 * The grouped append (see writeBatch), compiled once per process for each list of writers attached
 * to a batch (db/precompiled.ts). Its own values: the events' 12 columns and the key guards' 2 as
 * arrays, then the head it moves to and from.
 */
const appendStatement = precompiledByParts<AttachedWrites<unknown>, unknown[], AppendedRow>((db, writers, ...own) => {
  const [seq, eventId, ts, principal, action, keyId, keyVersion, outcome, errorCode, context, prevHash, hash] = own;
  const [guardKeys, guardPolicies, lastSeq, lastHash, baseSeq, baseHash] = own.slice(12);
  const veto = (w: AttachedWrites<unknown>) => sql.id(`${w.name}_veto`);
  return sql<AppendedRow>`
      WITH ev AS (
        SELECT * FROM unnest(${seq}::bigint[], ${eventId}::uuid[], ${ts}::timestamptz[], ${principal}::text[],
          ${action}::text[], ${keyId}::uuid[], ${keyVersion}::int[], ${outcome}::text[], ${errorCode}::text[],
          ${context}::jsonb[], ${prevHash}::text[], ${hash}::text[])
          AS e (seq, event_id, ts, principal, action, key_id, key_version, outcome, error_code, context, prev_hash, hash)),
      refused AS (
        SELECT DISTINCT g.key_id FROM unnest(${guardKeys}::text[], ${guardPolicies}::jsonb[]) AS g (key_id, policy)
        LEFT JOIN kms_keys k ON k.id::text = g.key_id
        WHERE k.id IS NULL OR k.state <> 'Enabled' OR coalesce(k.policy, 'null') <> g.policy),
      ${sql.join(
        writers.map((w) => sql`${veto(w.key)} AS (${w.key.vetoes(...w.standIns)}),`),
        sql` `,
      )}
      head AS (
        UPDATE audit_head SET seq = ${lastSeq}, hash = decode(${lastHash}, 'hex')
        WHERE id = 1 AND seq = ${baseSeq} AND hash = decode(${baseHash}, 'hex')
          AND NOT EXISTS (SELECT 1 FROM refused)
          ${sql.join(
            writers.map((w) => sql`AND NOT EXISTS (SELECT 1 FROM ${veto(w.key)})`),
            sql` `,
          )}
        RETURNING seq),
      ${sql.join(
        writers.flatMap((w) =>
          [w.key.writes(sql`EXISTS (SELECT 1 FROM head)`, ...w.standIns)]
            .flat()
            .map((body, k) => sql`${sql.id(`${w.key.name}_rows_${k}`)} AS (${body}),`),
        ),
        sql` `,
      )}
      ins AS (
        INSERT INTO audit_events (seq, event_id, ts, principal, action, key_id, key_version, outcome, error_code,
          context, prev_hash, hash)
        SELECT seq, event_id, ts, principal, action, key_id, key_version, outcome, error_code, context,
          decode(prev_hash, 'hex'), decode(hash, 'hex')
        FROM ev WHERE EXISTS (SELECT 1 FROM head))
      SELECT EXISTS (SELECT 1 FROM head) AS appended, ARRAY(SELECT key_id FROM refused) AS refused,
        json_build_array(${sql.join(
          writers.map((w) => sql`ARRAY(SELECT i FROM ${veto(w.key)})`),
          sql`, `,
        )}) AS vetoed, h.seq, h.hash
      FROM audit_head h WHERE h.id = 1`.compile(db);
});

/** The attached items of a batch by writer, with each item's index in `items`. */
function attachedGroups(
  items: readonly PendingEvent[],
  pending: readonly number[],
): { writer: AttachedWrites<unknown>; items: unknown[]; pending: number[] }[] {
  const groups = new Map<
    AttachedWrites<unknown>,
    { writer: AttachedWrites<unknown>; items: unknown[]; pending: number[] }
  >();
  for (const i of pending) {
    const a = items[i]!.attached;
    if (!a) continue;
    let g = groups.get(a.writer);
    if (!g) groups.set(a.writer, (g = { writer: a.writer, items: [], pending: [] }));
    g.items.push(a.item);
    g.pending.push(i);
  }
  return [...groups.values()];
}

function eventInput(event: AuditEvent, ts: string): Omit<HashInput, 'seq'> {
  return {
    event_id: randomUUID(),
    ts,
    principal: event.principal,
    action: event.action,
    key_id: event.keyId ?? null,
    key_version: event.keyVersion ?? null,
    outcome: event.outcome,
    error_code: event.errorCode ?? null,
    context: event.context ?? {},
  };
}

async function readHead(db: Executor): Promise<{ seq: number; hash: Buffer }> {
  const row = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirst();
  if (!row) throw new KmsError('AuditFailure', 'the audit log head is missing');
  return { seq: Number(row.seq), hash: Buffer.from(row.hash) };
}

function publish(event: AuditEvent): void {
  events.keyOperation.publish({
    keyId: event.keyId ?? null,
    action: event.action,
    principal: event.principal,
    outcome: event.outcome,
    errorCode: event.errorCode ?? null,
  });
}
