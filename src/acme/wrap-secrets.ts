import type { Db, Executor } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import { unwrapSecret, wrapSecret } from '../kms/secrets.ts';

/** Wraps and unwraps the ACME server's own secrets (nonce MAC key, EAB HMAC keys) with the key hierarchy. */
export interface SecretBox {
  wrap(db: Executor, label: string, plaintext: Uint8Array): Promise<Buffer>;
  unwrap(db: Executor, label: string, blob: Uint8Array): Promise<Buffer>;
}

export function secretBox(kms: KeyHierarchy): SecretBox {
  return {
    wrap: (db, label, plaintext) => wrapSecret(kms, db, label, plaintext),
    unwrap: (db, label, blob) => unwrapSecret(kms, db, label, blob),
  };
}

export const nonceSecretLabel = (name: string) => `acme-secret:${name}`;
export const eabSecretLabel = (keyId: string) => `eab:${keyId}`;

/**
 * Rows written before secrets were wrapped (migration 0015) hold plaintext: wrap them, each in a
 * statement that only replaces a row still unwrapped (replicas starting together race harmlessly).
 * Run at server start, so afterwards the database holds no plaintext of them.
 */
export async function wrapPlaintextSecrets(db: Db, box: SecretBox): Promise<number> {
  let n = 0;
  for (const row of await db
    .selectFrom('acme_secrets')
    .select(['name', 'value'])
    .where('wrapped', '=', false)
    .execute()) {
    const value = await box.wrap(db, nonceSecretLabel(row.name), row.value);
    const r = await db
      .updateTable('acme_secrets')
      .set({ value, wrapped: true })
      .where('name', '=', row.name)
      .where('wrapped', '=', false)
      .executeTakeFirst();
    n += Number(r.numUpdatedRows);
  }
  for (const row of await db
    .selectFrom('acme_eab_keys')
    .select(['key_id', 'hmac_key'])
    .where('wrapped', '=', false)
    .execute()) {
    const hmac_key = await box.wrap(db, eabSecretLabel(row.key_id), row.hmac_key);
    const r = await db
      .updateTable('acme_eab_keys')
      .set({ hmac_key, wrapped: true })
      .where('key_id', '=', row.key_id)
      .where('wrapped', '=', false)
      .executeTakeFirst();
    n += Number(r.numUpdatedRows);
  }
  return n;
}
