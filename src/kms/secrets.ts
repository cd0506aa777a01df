import type { Executor } from '../db/schema.ts';
import { open, parseHeader, PURPOSE, seal } from './container.ts';
import type { KeyHierarchy } from './hierarchy.ts';

/** The KEK that wraps the services' own secrets (EAB HMAC keys, the nonce MAC key); made on first use. */
export const SECRETS_KEK = 'service-secrets';

/**
 * Secrets the services keep in the database (an EAB key's HMAC key, the ACME nonce MAC key) are
 * stored as KWE1 ciphertexts under the `service-secrets` KEK, like every other key: a copy of the
 * database alone reveals none of them. `label` names what the secret is for (e.g. `eab:<key id>`)
 * and is bound into the ciphertext, so one secret can't be swapped for another's.
 */
export async function wrapSecret(
  kms: KeyHierarchy,
  db: Executor,
  label: string,
  plaintext: Uint8Array,
  principal = 'keyward',
): Promise<Buffer> {
  await kms.ensureKek(db, SECRETS_KEK, 'secrets', principal);
  const kek = await kms.primaryKek(db, SECRETS_KEK);
  return seal(kek.key, { purpose: PURPOSE.secret, keyId: kek.id, version: kek.version }, { secret: label }, plaintext);
}

export async function unwrapSecret(kms: KeyHierarchy, db: Executor, label: string, blob: Uint8Array): Promise<Buffer> {
  const header = parseHeader(blob);
  const key = await kms.kek(header.keyId, header.version, db);
  return open(key, blob, { purpose: PURPOSE.secret }, { secret: label });
}
