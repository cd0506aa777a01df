import { createHash } from 'node:crypto';

import { sql } from 'kysely';

import { x509 } from '../ca/x509.ts';
import type { AppContext } from '../context.ts';
import type { Executor } from '../db/schema.ts';
import { KmsError } from '../kms/errors.ts';
import { parsePolicy } from '../kms/key-policy.ts';
import { type KeyRef, resolveKey } from '../kms/refs.ts';
import { type DependantCheck, KeyStates } from '../kms/states.ts';
import { UsageError } from './command.ts';

// What `keyward kms …` and `keyward audit …` run, imported only when one of them runs (the command
// definitions in kms-commands.ts load with every CLI start, so they keep to parsing and printing).

export { listAudit } from '../kms/audit-query.ts';
export {
  createCheckpoint,
  exportCheckpoint,
  listCheckpoints,
  parseCheckpointLines,
  verifyAuditWithCheckpoints,
} from '../kms/checkpoints.ts';
export { DataKeys } from '../kms/data-keys.ts';
export { createImportJob, importPlainKey, importWrapped, parsePrivateKeyPem } from '../kms/import.ts';
export { listKeys, showKey } from '../kms/inventory.ts';
export { resolveKey } from '../kms/refs.ts';
export { rewrap } from '../kms/rewrap.ts';
export { rotateRoot } from '../kms/rotate-root.ts';
export { rotateKek, setAutoRotate } from '../kms/rotation.ts';

/**
 * What the CA still needs a key for: an issuer whose certificate or issued certificates have not
 * expired, or an unexpired delegated OCSP signer. Lives here because kms/ knows no certificates.
 */
export const caDependants: DependantCheck = async (db: Executor, ref: KeyRef) => {
  if (ref.kind !== 'key') return [];
  const out: string[] = [];
  const issuers = await sql<{ id: string; subject: string; live: boolean; certs: number }>`
    SELECT i.id, i.subject, i.not_after > now() AS live,
      (SELECT count(*) FROM certificates c WHERE c.issuer_id = i.id AND c.not_after > now() AND c.status = 'valid')::int AS certs
    FROM issuers i WHERE i.key_id = ${ref.id}`.execute(db);
  for (const i of issuers.rows) {
    if (i.live) out.push(`CA ${i.id} (${i.subject}) signs with this key and is valid until its certificate expires`);
    if (Number(i.certs) > 0)
      out.push(`${i.certs} unexpired certificate(s) issued by CA ${i.id} could no longer get CRLs or OCSP answers`);
  }
  const ocsp = await sql<{
    id: string;
  }>`SELECT id FROM ocsp_signers WHERE key_id = ${ref.id} AND not_after > now()`.execute(db);
  for (const o of ocsp.rows) out.push(`OCSP signer ${o.id} uses this key and has not expired`);
  return out;
};

export function states(ctx: AppContext): KeyStates {
  return new KeyStates(ctx.kms, ctx.database.db, [caDependants]);
}

export function certificateSpki(pem: string): Uint8Array {
  try {
    return new Uint8Array(new x509.X509Certificate(pem).publicKey.rawData);
  } catch {
    throw new UsageError('--cert is not a PEM certificate');
  }
}

/** Replaces the policy of a key or a whole KEK, audited in the same transaction. */
export async function putPolicy(
  ctx: AppContext,
  key: string,
  raw: unknown,
  principal: string,
): Promise<{ key: string; statements: number }> {
  const policy = parsePolicy(raw);
  const db = ctx.database.db;
  const ref = await resolveKey(db, key);
  if (ref.kind !== 'key' && ref.kind !== 'kek')
    throw new KmsError('InvalidInput', 'policies are set on keys and whole KEKs');
  await db.transaction().execute(async (trx) => {
    if (ref.kind === 'key')
      await trx
        .updateTable('kms_keys')
        .set({ policy: JSON.stringify(policy) })
        .where('id', '=', ref.id)
        .execute();
    else
      await trx
        .updateTable('kms_keks')
        .set({ policy: JSON.stringify(policy) })
        .where('id', '=', ref.id)
        .execute();
    await ctx.kms.audit.append(trx, {
      principal,
      action: 'put-policy',
      keyId: ref.id,
      outcome: 'success',
      context: { statements: policy.statements.length },
    });
  });
  return { key, statements: policy.statements.length };
}

/** A CA key's usage when KEY names one (dual control gates disabling those), else null. */
export async function caKeyUsage(db: Executor, text: string): Promise<'root-ca' | 'intermediate' | null> {
  const ref = await resolveKey(db, text);
  if (ref.kind !== 'key') return null;
  const row = await db.selectFrom('kms_keys').select('usage').where('id', '=', ref.id).executeTakeFirst();
  return row?.usage === 'root-ca' || row?.usage === 'intermediate' ? row.usage : null;
}

/** The usage an import job was made for, found by its token (null for an unknown token). */
export async function importJobUsage(db: Executor, token: string): Promise<string | null> {
  const digest = createHash('sha256').update(token).digest();
  const row = await db
    .selectFrom('kms_import_jobs')
    .select('usage')
    .where('token_sha256', '=', digest)
    .executeTakeFirst();
  return row?.usage ?? null;
}
