import { createPublicKey, verify as cryptoVerify } from 'node:crypto';

import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { type AuditVerification, verifyAudit } from './audit.ts';
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

/** The bytes an audit key signs (design §3.8, the CloudTrail digest pattern). */
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

/** Whether the janitor should checkpoint: every `everyEvents` events or `everyMs` since the last. */
export async function checkpointDue(db: Db, everyEvents: number, everyMs: number): Promise<boolean> {
  const r = await sql<{ due: boolean }>`
    SELECT (h.seq > 0 AND (c.seq IS NULL OR h.seq - c.seq >= ${everyEvents}
      OR (h.seq > c.seq AND c.ts <= now() - make_interval(secs => ${everyMs / 1000})))) AS due
    FROM audit_head h LEFT JOIN LATERAL (SELECT seq, ts FROM audit_checkpoints ORDER BY seq DESC LIMIT 1) c ON true
    WHERE h.id = 1`.execute(db);
  return r.rows[0]?.due === true;
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

export function parseCheckpointLines(text: string): Checkpoint[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .map((l, i) => {
      try {
        const c = JSON.parse(l) as Checkpoint;
        if (
          typeof c.seq !== 'number' ||
          typeof c.headHash !== 'string' ||
          typeof c.sig !== 'string' ||
          typeof c.spki !== 'string'
        )
          throw new Error('fields missing');
        return c;
      } catch (err) {
        throw new KmsError(
          'InvalidInput',
          `checkpoint file line ${i + 1} is not a checkpoint (${(err as Error).message})`,
        );
      }
    });
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
}

/**
 * The chain walk, then every stored checkpoint (signature, link to the previous one, head hash
 * against the recomputed chain), then an external copy: a full rewrite by someone with database
 * access recomputes the chain, but cannot make it meet heads that were signed and exported before.
 */
export async function verifyAuditWithCheckpoints(db: Db, external?: Checkpoint[]): Promise<FullVerification> {
  const stored = await listCheckpoints(db);
  const wanted = new Set([...stored, ...(external ?? [])].map((c) => c.seq));
  const hashes = new Map<number, string>();
  const chain = await verifyAudit(db, 5000, (seq, hash) => {
    if (wanted.has(seq)) hashes.set(seq, Buffer.from(hash).toString('hex'));
  });
  const base = { checkpoints: stored.length, externalCheckpoints: external?.length ?? 0 };
  if (!chain.ok) return { ...chain, ...base };
  const bad = (seq: number, problem: 'rewritten' | 'bad-checkpoint' | 'deleted', detail: string): FullVerification => ({
    ...chain,
    ...base,
    ok: false,
    firstBad: { seq, problem, detail },
  });

  // External first: it is the anchor the database can't forge.
  for (const c of [...(external ?? [])].sort((a, b) => a.seq - b.seq)) {
    if (!signatureValid(c))
      return bad(c.seq, 'bad-checkpoint', `the exported checkpoint at event ${c.seq} has an invalid signature`);
    const h = hashes.get(c.seq);
    if (h === undefined)
      return bad(
        c.seq,
        'deleted',
        `the exported checkpoint names event ${c.seq}, but the log ends at event ${chain.headSeq}: events were deleted`,
      );
    if (h !== c.headHash)
      return bad(
        c.seq,
        'rewritten',
        `events up to ${c.seq} differ from the exported checkpoint signed at ${c.ts}: the log was rewritten`,
      );
  }
  let prevSig = '';
  for (const c of stored) {
    if (!signatureValid(c))
      return bad(c.seq, 'bad-checkpoint', `checkpoint at event ${c.seq} has an invalid signature`);
    if (c.prevSig !== prevSig)
      return bad(c.seq, 'bad-checkpoint', `checkpoint at event ${c.seq} does not follow the previous checkpoint`);
    if (hashes.get(c.seq) !== c.headHash)
      return bad(c.seq, 'rewritten', `events up to ${c.seq} differ from the checkpoint signed at ${c.ts}`);
    prevSig = c.sig;
  }
  return { ...chain, ...base };
}
