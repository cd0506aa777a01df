import {
  constants,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  randomBytes,
  randomUUID,
  timingSafeEqual,
} from 'node:crypto';

import { sql } from 'kysely';

import type { Db, KeyUsage } from '../db/schema.ts';
import { open, PURPOSE, seal } from './container.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { algOf } from './key-types.ts';

// Bring your own key: plain PEM import, and wrapped import in the common BYOK format
// RSA-OAEP-SHA-256(ephemeral AES-256 key) ‖ AES-KWP(PKCS#8 DER), as AWS, PKCS#11, Vault and GCP use.

export const IMPORT_KEK = 'import';
const WRAPPING_BITS = 3072;
const RSA_PART = WRAPPING_BITS / 8;
const KWP_IV = Buffer.from('A65959A6', 'hex');
const TOKEN_HOURS = 24;

export interface ImportResult {
  keyId: string;
  usage: KeyUsage;
  alg: string;
  spkiSha256: string;
}

/** PKCS#8, SEC1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY") PEM, or encrypted PKCS#8 with a passphrase. */
export function parsePrivateKeyPem(pem: string, passphrase?: string): KeyObject {
  if (!/-----BEGIN (ENCRYPTED |EC |RSA )?PRIVATE KEY-----/.test(pem)) {
    throw new KmsError('InvalidInput', 'the key file is not a PEM private key (PKCS#8, SEC1 or PKCS#1)');
  }
  if (pem.includes('BEGIN ENCRYPTED PRIVATE KEY') && !passphrase) {
    throw new KmsError('InvalidInput', 'the key is encrypted PKCS#8: give its passphrase with --passphrase-file');
  }
  try {
    return createPrivateKey({ key: pem, format: 'pem', ...(passphrase ? { passphrase } : {}) });
  } catch {
    throw new KmsError('InvalidInput', 'the private key cannot be parsed (damaged PEM or wrong passphrase)');
  }
}

function assertMatches(key: KeyObject, expectedSpki: Uint8Array): Buffer {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const a = createHash('sha256').update(spki).digest();
  const b = createHash('sha256').update(expectedSpki).digest();
  if (!timingSafeEqual(a, b)) throw new KmsError('KeyMismatch', "key does not match the certificate's public key");
  return a;
}

/** Wraps an existing private key like a generated one, after checking it matches the certificate's SPKI. */
export async function importPlainKey(
  kms: KeyHierarchy,
  db: Db,
  opts: { privateKey: KeyObject; expectedSpki: Uint8Array; usage: KeyUsage; principal: string },
): Promise<ImportResult> {
  const alg = algOf(opts.privateKey);
  const spkiSha256 = assertMatches(opts.privateKey, opts.expectedSpki);
  const keyId = await kms.storeKey(db, {
    usage: opts.usage,
    privateKey: opts.privateKey,
    principal: opts.principal,
    action: 'import',
    context: { source: 'pem' },
  });
  return { keyId, usage: opts.usage, alg, spkiSha256: spkiSha256.toString('hex') };
}

export interface ImportParams {
  jobId: string;
  keyId: string;
  wrappingPublicKeyPem: string;
  wrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256';
  /** Single use; only its SHA-256 is stored. */
  importToken: string;
  expiresAt: string;
}

function importContext(jobId: string): Record<string, string> {
  return { 'kw:purpose': 'import', 'kw:job': jobId };
}

/** Creates an import job: a PendingImport key, an RSA-3072 wrapping key (stored as KWE1 0x05) and a token. */
export async function createImportJob(
  kms: KeyHierarchy,
  db: Db,
  opts: { usage: KeyUsage; principal: string },
): Promise<ImportParams> {
  await kms.ensureKek(db, IMPORT_KEK, 'import', opts.principal);
  const kek = await kms.primaryKek(db, IMPORT_KEK);
  const jobId = randomUUID();
  const keyId = randomUUID();
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: WRAPPING_BITS });
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const token = randomBytes(32).toString('base64url');
  try {
    const wrappedPriv = seal(
      kek.key,
      { purpose: PURPOSE.importKey, keyId: kek.id, version: kek.version },
      importContext(jobId),
      pkcs8,
    );
    const expires = await db.transaction().execute(async (trx) => {
      await trx
        .insertInto('kms_keys')
        .values({
          id: keyId,
          usage: opts.usage,
          alg: 'pending',
          spki_sha256: new Uint8Array(),
          state: 'PendingImport',
          policy: null,
          kek_id: null,
          kek_version: null,
          dek_wrapped: null,
          key_ciphertext: null,
          external_ref: null,
          deletion_at: null,
          destroyed_at: null,
        })
        .execute();
      const row = await trx
        .insertInto('kms_import_jobs')
        .values({
          id: jobId,
          target_key_id: keyId,
          usage: opts.usage,
          wrapping_spki: publicKey.export({ type: 'spki', format: 'der' }),
          wrapping_priv: wrappedPriv,
          token_sha256: createHash('sha256').update(token).digest(),
          expires_at: sql<Date>`now() + make_interval(hours => ${TOKEN_HOURS}::int)` as never,
          used_at: null,
        })
        .returning('expires_at')
        .executeTakeFirstOrThrow();
      await kms.audit.append(trx, {
        principal: opts.principal,
        action: 'import-params',
        keyId,
        outcome: 'success',
        context: { job: jobId, usage: opts.usage },
      });
      return new Date(row.expires_at);
    });
    return {
      jobId,
      keyId,
      wrappingPublicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
      wrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256',
      importToken: token,
      expiresAt: expires.toISOString(),
    };
  } finally {
    pkcs8.fill(0);
  }
}

/** Opens RSA-OAEP(eph) ‖ AES-KWP(PKCS#8) with the job's wrapping key. */
function unwrapBlob(wrappingKey: KeyObject, blob: Buffer): KeyObject {
  if (blob.length <= RSA_PART + 8)
    throw new KmsError('InvalidInput', `the wrapped key is too short for RSA-${WRAPPING_BITS} OAEP ‖ AES-KWP`);
  let eph: Buffer;
  try {
    eph = privateDecrypt(
      { key: wrappingKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      blob.subarray(0, RSA_PART),
    );
  } catch {
    throw new KmsError(
      'InvalidInput',
      "the wrapped key was not encrypted to this import job's wrapping key (RSA-OAEP with SHA-256 failed)",
    );
  }
  let pkcs8: Buffer;
  try {
    if (eph.length !== 32) throw new Error('ephemeral key is not 256 bits');
    const d = createDecipheriv('id-aes256-wrap-pad', eph, KWP_IV);
    pkcs8 = Buffer.concat([d.update(blob.subarray(RSA_PART)), d.final()]);
  } catch {
    throw new KmsError('InvalidInput', 'the key material failed AES key-wrap-with-padding (RFC 5649) integrity check');
  } finally {
    eph.fill(0);
  }
  try {
    return createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  } catch {
    throw new KmsError('InvalidInput', 'the unwrapped key material is not PKCS#8 DER');
  } finally {
    pkcs8.fill(0);
  }
}

/** Accepts key material wrapped offline for an import job; the token is single use and expires. */
export async function importWrapped(
  kms: KeyHierarchy,
  db: Db,
  opts: { blob: Buffer; token: string; expectedSpki: Uint8Array; principal: string },
): Promise<ImportResult> {
  const digest = createHash('sha256').update(opts.token).digest();
  try {
    return await db.transaction().execute(async (trx) => {
      const job = await sql<{
        id: string;
        target_key_id: string;
        usage: KeyUsage;
        wrapping_priv: Uint8Array | null;
        used_at: Date | null;
        expires_at: Date;
        expired: boolean;
      }>`
        SELECT id, target_key_id, usage, wrapping_priv, used_at, expires_at, expires_at <= now() AS expired
        FROM kms_import_jobs WHERE token_sha256 = ${digest} FOR UPDATE`.execute(trx);
      const row = job.rows[0];
      if (!row || row.used_at !== null || row.wrapping_priv === null)
        throw new KmsError('ImportTokenInvalid', 'import token is not valid');
      if (row.expired)
        throw new KmsError('ImportTokenExpired', `import token expired at ${new Date(row.expires_at).toISOString()}`);
      const kek = await trx
        .selectFrom('kms_keks')
        .select('id')
        .where('name', '=', IMPORT_KEK)
        .executeTakeFirstOrThrow();
      const header = Buffer.from(row.wrapping_priv);
      const version = header.readUInt32BE(22);
      const wrapping = open(
        await kms.kek(kek.id, version, trx),
        header,
        { purpose: PURPOSE.importKey, keyId: kek.id },
        importContext(row.id),
      );
      const wrappingKey = createPrivateKey({ key: wrapping, format: 'der', type: 'pkcs8' });
      wrapping.fill(0);
      const privateKey = unwrapBlob(wrappingKey, opts.blob);
      const alg = algOf(privateKey);
      const spkiSha256 = assertMatches(privateKey, opts.expectedSpki);
      await trx
        .deleteFrom('kms_keys')
        .where('id', '=', row.target_key_id)
        .where('state', '=', 'PendingImport')
        .execute();
      await kms.storeKey(trx, {
        id: row.target_key_id,
        usage: row.usage,
        privateKey,
        principal: opts.principal,
        action: 'import',
        context: { source: 'wrapped', job: row.id },
      });
      await trx
        .updateTable('kms_import_jobs')
        .set({ used_at: sql<Date>`now()` as never, wrapping_priv: null })
        .where('id', '=', row.id)
        .execute();
      return { keyId: row.target_key_id, usage: row.usage, alg, spkiSha256: spkiSha256.toString('hex') };
    });
  } catch (err) {
    await kms.audit.append(db, {
      principal: opts.principal,
      action: 'import',
      outcome: 'denied',
      errorCode: err instanceof KmsError ? err.code : 'InternalError',
      context: { source: 'wrapped' },
    });
    throw err;
  }
}

/** The usage an import job was made for, found by its token (null for an unknown token). */
export async function importJobUsage(db: Db, token: string): Promise<KeyUsage | null> {
  const digest = createHash('sha256').update(token).digest();
  const row = await db
    .selectFrom('kms_import_jobs')
    .select('usage')
    .where('token_sha256', '=', digest)
    .executeTakeFirst();
  return row?.usage ?? null;
}
