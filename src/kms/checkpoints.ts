import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import type { AuditLog, AuditProblem, AuditVerification } from './audit.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';

/** One signed chain head, as stored and as exported (JSON lines) for safekeeping elsewhere. */
export interface Checkpoint {
  seq: number;
  /** hex SHA-256 chain hash of event `seq` */
  headHash: string;
  ts: string;
  keyId: string;
  /** base64 DER SubjectPublicKeyInfo of the audit key, so a copy can be checked on its own. */
  spki: string;
  sig: string;
  prevSig: string;
}

/** The bytes an audit key signs (the CloudTrail digest pattern: each checkpoint signs the previous one's signature too). */
export function checkpointMessage(c: Pick<Checkpoint, 'seq' | 'headHash' | 'ts' | 'prevSig'>): Buffer {
  return Buffer.from(
    `keyward-checkpoint-v1\n${c.seq}\n${c.headHash}\n${c.ts}\n${Buffer.from(c.prevSig, 'base64').toString('hex')}`,
    'utf8',
  );
}

async function auditKey(kms: KeyHierarchy, db: Db): Promise<string> {
  const row = await db
    .selectFrom('kms_keys')
    .select('id')
    .where('usage', '=', 'audit')
    .where('state', '=', 'Enabled')
    .orderBy('created_at', 'desc')
    .executeTakeFirst();
  if (row) return row.id;
  return (await kms.createKey(db, { usage: 'audit', alg: 'ecdsa-p256', principal: 'keyward:audit' })).id;
}

/**
 * Signs the current chain head with the audit key, unless it is already checkpointed. The
 * signature itself is audited, so it becomes event seq+1 and lands in the next checkpoint.
 */
export async function createCheckpoint(
  kms: KeyHierarchy,
  db: Db,
  principal = 'keyward:audit',
): Promise<Checkpoint | undefined> {
  const keyId = await auditKey(kms, db);
  // No enclosing transaction: signing appends its own audit event, and the embedded database has
  // one connection. Two writers are kept apart by the janitor lease; the insert re-checks the link.
  const head = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirstOrThrow();
  const seq = Number(head.seq);
  const last = await db
    .selectFrom('audit_checkpoints')
    .select(['seq', 'sig'])
    .orderBy('seq', 'desc')
    .limit(1)
    .executeTakeFirst();
  if (seq === 0 || (last && Number(last.seq) >= seq)) return undefined;
  // Milliseconds, so the signed text survives the round trip through timestamptz exactly.
  const now = await sql<{
    ts: string;
  }>`SELECT to_char(date_trunc('milliseconds', now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts`.execute(
    db,
  );
  const draft = {
    seq,
    headHash: Buffer.from(head.hash).toString('hex'),
    ts: now.rows[0]!.ts,
    prevSig: Buffer.from(last?.sig ?? new Uint8Array()).toString('base64'),
  };
  const signer = await kms.signer(keyId, 'sign-audit-checkpoint', principal);
  const sig = await signer.sign(checkpointMessage(draft), { checkpoint_seq: String(seq) });
  const inserted = await db.transaction().execute(async (trx) => {
    const latest = await trx
      .selectFrom('audit_checkpoints')
      .select('seq')
      .orderBy('seq', 'desc')
      .limit(1)
      .forUpdate()
      .executeTakeFirst();
    if (Number(latest?.seq ?? 0) !== Number(last?.seq ?? 0)) return false;
    await trx
      .insertInto('audit_checkpoints')
      .values({
        seq,
        head_hash: head.hash,
        ts: draft.ts,
        key_id: keyId,
        spki: signer.spki,
        sig,
        prev_sig: Buffer.from(draft.prevSig, 'base64'),
      })
      .onConflict((oc) => oc.column('seq').doNothing())
      .execute();
    return true;
  });
  if (!inserted) return undefined;
  return {
    ...draft,
    keyId,
    spki: Buffer.from(signer.spki).toString('base64'),
    sig: Buffer.from(sig).toString('base64'),
  };
}

/**
 * Whether to checkpoint now: `everyEvents` events since the last one, or `everyMs` since it with
 * anything new. A checkpoint's own signature is an audit event; alone it does not make one due,
 * or an idle log would be checkpointed forever.
 */
export async function checkpointDue(db: Db, everyEvents: number, everyMs: number): Promise<boolean> {
  const r = await sql<{ due: boolean }>`
    SELECT (h.seq > 0 AND (c.seq IS NULL OR h.seq - c.seq >= ${everyEvents}
      OR (h.seq > c.seq + 1 AND c.ts <= now() - make_interval(secs => ${everyMs / 1000})))) AS due
    FROM audit_head h LEFT JOIN LATERAL (SELECT seq, ts FROM audit_checkpoints ORDER BY seq DESC LIMIT 1) c ON true
    WHERE h.id = 1`.execute(db);
  return r.rows[0]?.due === true;
}

/** Signs a checkpoint when one is due (see checkpointDue); run under a lease, one replica at a time. */
export async function checkpointIfDue(
  kms: KeyHierarchy,
  db: Db,
  opts: { everyEvents: number; everyMs: number },
): Promise<Checkpoint | undefined> {
  if (!(await checkpointDue(db, opts.everyEvents, opts.everyMs))) return undefined;
  return createCheckpoint(kms, db);
}

/**
 * Writes a new checkpoint outside the database, where a database writer can't reach it: `-` is
 * standard output (for a log shipper), anything else a file that only ever grows (JSON lines,
 * synced before this returns, the format `audit verify --checkpoints` reads).
 */
export function exportCheckpoint(sink: string, c: Checkpoint): void {
  const line = JSON.stringify(c) + '\n';
  if (sink === '-') {
    process.stdout.write(line);
    return;
  }
  const fd = openSync(sink, 'a', 0o644);
  try {
    writeSync(fd, line);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Every checkpoint, oldest first, in the export format. */
export async function listCheckpoints(db: Db): Promise<Checkpoint[]> {
  const rows = await db.selectFrom('audit_checkpoints').selectAll().orderBy('seq').execute();
  return rows.map((r) => ({
    seq: Number(r.seq),
    headHash: Buffer.from(r.head_hash).toString('hex'),
    ts: typeof r.ts === 'string' ? r.ts : isoMicros(r.ts),
    keyId: r.key_id,
    spki: Buffer.from(r.spki).toString('base64'),
    sig: Buffer.from(r.sig).toString('base64'),
    prevSig: Buffer.from(r.prev_sig).toString('base64'),
  }));
}

// The signed ts string is stored as timestamptz; the signed text is rebuilt with microseconds.
function isoMicros(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * Checkpoints from exported JSON lines. Other JSON log lines (a standard-output sink shares its
 * stream with the server's log) are skipped; anything else is an error naming the line.
 */
export function parseCheckpointLines(text: string): Checkpoint[] {
  const out: Checkpoint[] = [];
  text.split('\n').forEach((raw, i) => {
    const l = raw.trim();
    if (l.length === 0) return;
    let c: Partial<Checkpoint> & { msg?: unknown; level?: unknown };
    try {
      c = JSON.parse(l) as typeof c;
    } catch (err) {
      throw new KmsError('InvalidInput', `checkpoint file line ${i + 1} is not JSON (${(err as Error).message})`);
    }
    const isCheckpoint =
      typeof c.seq === 'number' &&
      typeof c.headHash === 'string' &&
      typeof c.sig === 'string' &&
      typeof c.spki === 'string' &&
      typeof c.prevSig === 'string' &&
      typeof c.ts === 'string';
    if (isCheckpoint) out.push(c as Checkpoint);
    else if (c.msg === undefined || c.level === undefined)
      throw new KmsError('InvalidInput', `checkpoint file line ${i + 1} is not a checkpoint (fields missing)`);
  });
  return out;
}

function signatureValid(c: Checkpoint): boolean {
  try {
    const key = createPublicKey({ key: Buffer.from(c.spki, 'base64'), format: 'der', type: 'spki' });
    const digest =
      key.asymmetricKeyType === 'ed25519'
        ? null
        : key.asymmetricKeyDetails?.namedCurve === 'secp384r1'
          ? 'sha384'
          : 'sha256';
    return cryptoVerify(digest, checkpointMessage(c), key, Buffer.from(c.sig, 'base64'));
  } catch {
    return false;
  }
}

export interface FullVerification extends AuditVerification {
  checkpoints: number;
  externalCheckpoints: number;
  /** The newest event a valid signed checkpoint (stored or exported) vouches for; 0 if none. */
  lastCheckpointSeq: number;
  /** Events after that checkpoint: only the chain key vouches for them. */
  keyOnlyEvents: number;
}

/**
 * The chain walk, then every exported and stored checkpoint up to the head the walk read:
 * signature, link to the previous one, head hash against the recomputed chain. Someone with the
 * chain key (or the legacy prefix's plain hashes) can recompute the chain, but can't make it meet
 * heads that were signed and exported before; a rewrite found that way is named as the range
 * between the last checkpoint that matches and the first that does not.
 */
export async function verifyAuditWithCheckpoints(
  audit: AuditLog,
  db: Db,
  external?: Checkpoint[],
): Promise<FullVerification> {
  // Listed before the walk reads the head, so every stored checkpoint is at or below it.
  const stored = await listCheckpoints(db);
  const wanted = new Set([...stored, ...(external ?? [])].map((c) => c.seq));
  const hashes = new Map<number, string>();
  const chain = await audit.verify(db, (seq, hash) => {
    if (wanted.has(seq)) hashes.set(seq, Buffer.from(hash).toString('hex'));
  });
  let lastGood = 0;
  const result = (extra: Partial<FullVerification> = {}): FullVerification => ({
    ...chain,
    checkpoints: stored.length,
    externalCheckpoints: external?.length ?? 0,
    lastCheckpointSeq: lastGood,
    keyOnlyEvents: Math.max(0, chain.headSeq - lastGood),
    ...extra,
  });
  if (!chain.ok) return result();
  const bad = (seq: number, problem: AuditProblem, detail: string) =>
    result({ ok: false, firstBad: { seq, problem, detail } });

  // External first: it is the anchor the database can't forge.
  const checks: [Checkpoint[], string][] = [
    [[...(external ?? [])].sort((a, b) => a.seq - b.seq), 'exported checkpoint'],
    [stored, 'checkpoint'],
  ];
  const good: number[] = [];
  for (const [list, what] of checks) {
    let prevSig: string | undefined = what === 'checkpoint' ? '' : undefined;
    for (const c of list) {
      if (!signatureValid(c))
        return bad(c.seq, 'bad-checkpoint', `the ${what} at event ${c.seq} has an invalid signature`);
      if (prevSig !== undefined && c.prevSig !== prevSig)
        return bad(c.seq, 'bad-checkpoint', `the ${what} at event ${c.seq} does not follow the previous checkpoint`);
      const h = hashes.get(c.seq);
      if (h === undefined)
        return bad(
          c.seq,
          'deleted',
          `the ${what} names event ${c.seq}, but the log ends at event ${chain.headSeq}: events were deleted`,
        );
      if (h !== c.headHash) {
        const from = Math.max(0, ...good.filter((g) => g < c.seq)) + 1;
        const legacy = chain.keyedFrom === null || c.seq < chain.keyedFrom;
        return bad(
          from,
          'rewritten',
          `events ${from}–${c.seq} differ from the ${what} signed at ${c.ts}: the log was rewritten ${
            legacy
              ? '(unkeyed legacy events: which of them changed can not be told)'
              : 'by someone holding the chain key'
          }`,
        );
      }
      good.push(c.seq);
      if (prevSig !== undefined) prevSig = c.sig;
    }
  }
  lastGood = Math.max(0, ...good);
  return result();
}
