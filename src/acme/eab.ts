import { randomBytes } from 'node:crypto';

import { calculateJwkThumbprint, flattenedVerify } from 'jose';

import { KeywardError } from '../core/errors.ts';
import type { Db, Executor } from '../db/schema.ts';
import { decodeProtected, parseFlattened, publicJwk } from './jws.ts';
import { eabSecretLabel, type SecretBox } from './wrap-secrets.ts';

export interface EabKey {
  keyId: string;
  /** 256-bit HMAC key, unpadded base64url (the form cert-manager, lego and certbot expect). */
  hmacKey: string;
  label: string | null;
  createdAt: Date;
}

const MAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'];

/**
 * Provisions an External Account Binding key (RFC 8555 §7.3.4) for `keyward eab create`. The key id
 * is plain base64url: no `:` (uacme splits on it) and nothing that needs escaping in JSON.
 */
export async function createEabKey(secrets: SecretBox, db: Executor, opts: { label?: string } = {}): Promise<EabKey> {
  const keyId = `kw_${randomBytes(12).toString('base64url')}`;
  const key = randomBytes(32);
  // Stored wrapped by the key hierarchy; the plaintext is shown once, to the operator.
  const hmacKey = await secrets.wrap(db, eabSecretLabel(keyId), key);
  const row = await db
    .insertInto('acme_eab_keys')
    .values({ key_id: keyId, hmac_key: hmacKey, wrapped: true, label: opts.label ?? null })
    .returning(['created_at'])
    .executeTakeFirstOrThrow();
  return { keyId, hmacKey: key.toString('base64url'), label: opts.label ?? null, createdAt: row.created_at };
}

/**
 * Checks an externalAccountBinding JWS against the outer request: MAC algorithm, our key id, no
 * nonce, same url, a valid MAC, and a payload that is the account key (compared by thumbprint, since
 * clients serialise JWKs differently). Returns the EAB key id; marking it spent is the caller's job.
 */
export async function verifyEab(
  secrets: SecretBox,
  db: Db,
  binding: unknown,
  outerUrl: string,
  accountThumbprint: string,
): Promise<string> {
  const jws = parseFlattened(binding);
  const header = decodeProtected(jws);
  if (typeof header.alg !== 'string' || !MAC_ALGORITHMS.includes(header.alg)) {
    throw new KeywardError('malformed', `externalAccountBinding must use one of ${MAC_ALGORITHMS.join(', ')}`);
  }
  if ('nonce' in header) throw new KeywardError('malformed', 'externalAccountBinding must not contain a nonce');
  if (header.url !== outerUrl)
    throw new KeywardError('malformed', 'externalAccountBinding "url" must equal the newAccount URL');
  if (typeof header.kid !== 'string') throw new KeywardError('malformed', 'externalAccountBinding needs a "kid"');
  const row = await db.selectFrom('acme_eab_keys').selectAll().where('key_id', '=', header.kid).executeTakeFirst();
  if (!row) throw new KeywardError('unauthorized', 'Unknown external account binding key id');
  if (row.revoked_at !== null)
    throw new KeywardError('unauthorized', 'This external account binding key has been revoked');
  if (row.account_id !== null)
    throw new KeywardError('unauthorized', 'This external account binding key has already been used');
  let payload: Uint8Array;
  try {
    const hmacKey = row.wrapped
      ? await secrets.unwrap(db, eabSecretLabel(row.key_id), row.hmac_key)
      : Buffer.from(row.hmac_key);
    ({ payload } = await flattenedVerify(jws, new Uint8Array(hmacKey), { algorithms: [header.alg] }));
  } catch {
    throw new KeywardError('unauthorized', 'externalAccountBinding MAC is invalid');
  }
  let inner: unknown;
  try {
    inner = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    throw new KeywardError('malformed', 'externalAccountBinding payload is not a JWK');
  }
  const thumbprint = await calculateJwkThumbprint(publicJwk(inner), 'sha256').catch(() => {
    throw new KeywardError('malformed', 'externalAccountBinding payload is not a JWK');
  });
  if (thumbprint !== accountThumbprint)
    throw new KeywardError('malformed', 'externalAccountBinding payload is not the account key');
  return row.key_id;
}

export function eabRequired(): KeywardError {
  return new KeywardError(
    'externalAccountRequired',
    'This server requires an external account binding for new accounts',
  );
}
