import { createHash, randomUUID } from 'node:crypto';

import { sql } from 'kysely';

import { events } from '../core/events.ts';
import type { AuditEventRow, Db, Executor } from '../db/schema.ts';
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

const GENESIS = Buffer.alloc(32);

interface HashInput {
  seq: number;
  event_id: string;
  ts: Date;
  principal: string;
  action: string;
  key_id: string | null;
  key_version: number | null;
  outcome: AuditEvent['outcome'];
  error_code: string | null;
  context: unknown;
}

export function eventHash(prevHash: Uint8Array, e: HashInput): Buffer {
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64BE(BigInt(e.seq));
  const body = canonicalJson({
    seq: e.seq,
    event_id: e.event_id,
    ts: e.ts.toISOString(),
    principal: e.principal,
    action: e.action,
    key_id: e.key_id,
    key_version: e.key_version,
    outcome: e.outcome,
    error_code: e.error_code,
    context: e.context,
  });
  return createHash('sha256').update('keyward-audit-v1').update(seq).update(prevHash).update(body).digest();
}

/** Runs fn in the caller's transaction when there is one, otherwise in a new one. */
export async function inTransaction<T>(db: Executor, fn: (trx: Executor) => Promise<T>): Promise<T> {
  if (db.isTransaction) return fn(db);
  return db.transaction().execute(fn);
}

/**
 * Appends one event to the hash chain inside the caller's unit of work. The head row lock gives
 * gap-free sequence numbers in commit order across replicas; if this fails, the operation fails.
 */
export async function appendAudit(db: Executor, event: AuditEvent): Promise<number> {
  const seq = await inTransaction(db, async (trx) => {
    const head = await sql<{ seq: string | number; hash: Uint8Array; now: Date }>`
      SELECT seq, hash, date_trunc('milliseconds', clock_timestamp()) AS now
      FROM audit_head WHERE id = 1 FOR UPDATE`.execute(trx);
    const row = head.rows[0];
    if (!row) throw new KmsError('AuditFailure', 'the audit log head is missing');
    const input: HashInput = {
      seq: Number(row.seq) + 1,
      event_id: randomUUID(),
      ts: new Date(row.now),
      principal: event.principal,
      action: event.action,
      key_id: event.keyId ?? null,
      key_version: event.keyVersion ?? null,
      outcome: event.outcome,
      error_code: event.errorCode ?? null,
      context: event.context ?? {},
    };
    const hash = eventHash(row.hash, input);
    // The event and the new head in one statement: one round trip fewer for every signature.
    await trx
      .with('head', (q) => q.updateTable('audit_head').set({ seq: input.seq, hash }).where('id', '=', 1))
      .insertInto('audit_events')
      .values({ ...input, context: JSON.stringify(input.context), prev_hash: row.hash, hash })
      .execute();
    return input.seq;
  });
  events.keyOperation.publish({
    keyId: event.keyId ?? null,
    action: event.action,
    principal: event.principal,
    outcome: event.outcome,
    errorCode: event.errorCode ?? null,
  });
  return seq;
}

export interface AuditVerification {
  ok: boolean;
  events: number;
  headSeq: number;
  /** The first row that breaks the chain, and how. */
  firstBad?: {
    seq: number;
    problem: 'deleted' | 'inserted-or-reordered' | 'edited' | 'head-mismatch' | 'rewritten' | 'bad-checkpoint';
    detail: string;
  };
}

/** Walks the whole chain in pages; names the first row that was edited, deleted, inserted or moved. */
export async function verifyAudit(
  db: Db,
  pageSize = 5000,
  onEvent?: (seq: number, hash: Uint8Array) => void,
): Promise<AuditVerification> {
  let prev: Uint8Array = GENESIS;
  let expected = 1;
  let count = 0;
  for (;;) {
    const rows: AuditEventRow[] = await db
      .selectFrom('audit_events')
      .selectAll()
      .where('seq', '>=', expected)
      .orderBy('seq')
      .limit(pageSize)
      .execute();
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq !== expected) {
        return fail(count, expected - 1, {
          seq: expected,
          problem: 'deleted',
          detail: `event ${expected} is missing (next present is ${seq})`,
        });
      }
      if (!Buffer.from(r.prev_hash).equals(Buffer.from(prev))) {
        return fail(count, seq, {
          seq,
          problem: 'inserted-or-reordered',
          detail: `event ${seq} does not follow event ${seq - 1}`,
        });
      }
      const recomputed = eventHash(prev, { ...r, seq, ts: new Date(r.ts), context: r.context });
      if (!recomputed.equals(Buffer.from(r.hash))) {
        return fail(count, seq, { seq, problem: 'edited', detail: `event ${seq} was changed after it was written` });
      }
      prev = r.hash;
      onEvent?.(seq, r.hash);
      expected = seq + 1;
      count++;
    }
    if (rows.length < pageSize) break;
  }
  const head = await db.selectFrom('audit_head').selectAll().where('id', '=', 1).executeTakeFirst();
  const headSeq = Number(head?.seq ?? -1);
  if (!head || headSeq !== expected - 1 || !Buffer.from(head.hash).equals(Buffer.from(prev))) {
    return fail(count, headSeq, {
      seq: expected,
      problem: headSeq > expected - 1 ? 'deleted' : 'head-mismatch',
      detail: `the chain ends at event ${expected - 1} but the head names event ${headSeq}`,
    });
  }
  return { ok: true, events: count, headSeq };
}

function fail(
  events: number,
  headSeq: number,
  firstBad: NonNullable<AuditVerification['firstBad']>,
): AuditVerification {
  return { ok: false, events, headSeq, firstBad };
}
