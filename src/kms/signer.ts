import { constants, createPublicKey, type KeyObject, sign as cryptoSign } from 'node:crypto';

import type { Attached } from './audit.ts';

/**
 * The signature schemes Keyward signs with; ECDSA signatures are DER `Ecdsa-Sig-Value`. RSA signs
 * with PKCS#1 v1.5 (`rsa-sha256`) unless the key was made for RSASSA-PSS (SHA-256, MGF1-SHA-256,
 * 32-byte salt: RFC 4055 §3.1).
 */
export type SignatureAlgorithm = 'ecdsa-sha256' | 'ecdsa-sha384' | 'rsa-sha256' | 'rsa-pss-sha256' | 'ed25519';

/** How an RSA key signs; chosen when the key is made and kept with it. */
export type RsaScheme = 'pkcs1' | 'pss';

/** The RSA-PSS salt length: the digest's length, the usual choice (RFC 8017 §9.1). */
export const PSS_SALT_LENGTH = 32;

/**
 * What the key hierarchy hands the signing core: it signs bytes on request and never exposes the
 * private key. `ca/` builds the to-be-signed structures, `kms/` only signs them.
 */
export interface Signer {
  readonly algorithm: SignatureAlgorithm;
  /** SubjectPublicKeyInfo of the signing key, DER. */
  readonly spki: Uint8Array;
  /**
   * `context` says what the signature is for (serial, profile...); the key hierarchy writes it to
   * the audit log with the key use. It must never hold secrets.
   */
  sign(data: Uint8Array, context?: SignContext): Promise<Uint8Array>;
  /**
   * The key use in two steps: the key's state and policy are checked and the use's audit event
   * committed now, with `attached`'s rows in the same statement (the signing core's serial
   * reservation: one flushed commit for both); the signature is made afterwards, once, by the
   * answer. `vetoed`: the attached rows were refused (a blocked subject key), nothing was written.
   * Only the key hierarchy's signers have it.
   */
  authorize?<C>(context: SignContext, attached?: Attached<C>): Promise<AuthorizedSignature | 'vetoed'>;
}

/** A key use authorised and audited before its signature exists (see Signer.authorize). */
export interface AuthorizedSignature {
  /** Makes the signature; a failure is audited as its own event (outcome `failure`) and thrown. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export type SignContext = Readonly<Record<string, string>>;

export function signatureAlgorithmFor(key: KeyObject, rsaScheme: RsaScheme = 'pkcs1'): SignatureAlgorithm {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ecdsa-sha256';
    if (curve === 'secp384r1') return 'ecdsa-sha384';
    throw new Error(`unsupported EC curve ${curve ?? 'unknown'}`);
  }
  if (type === 'rsa') return rsaScheme === 'pss' ? 'rsa-pss-sha256' : 'rsa-sha256';
  if (type === 'ed25519') return 'ed25519';
  throw new Error(`unsupported key type ${type ?? 'unknown'}`);
}

const DIGEST: Record<SignatureAlgorithm, string | null> = {
  'ecdsa-sha256': 'sha256',
  'ecdsa-sha384': 'sha384',
  'rsa-sha256': 'sha256',
  'rsa-pss-sha256': 'sha256',
  ed25519: null,
};

/** The digest a signature algorithm hashes with (null: Ed25519 signs the message itself). */
export function digestOf(algorithm: SignatureAlgorithm): 'sha256' | 'sha384' | null {
  return DIGEST[algorithm] as 'sha256' | 'sha384' | null;
}

/** Signs in-process with a private KeyObject (the software backend). */
export function signWithKeyObject(key: KeyObject, algorithm: SignatureAlgorithm, data: Uint8Array): Uint8Array {
  if (algorithm === 'rsa-pss-sha256')
    return cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: PSS_SALT_LENGTH });
  return cryptoSign(DIGEST[algorithm], data, key);
}

/** A Signer over an in-memory private key; the key hierarchy wraps this with policy and audit. */
export function keyObjectSigner(key: KeyObject): Signer {
  const algorithm = signatureAlgorithmFor(key);
  const spki = new Uint8Array(createPublicKey(key).export({ type: 'spki', format: 'der' }));
  return {
    algorithm,
    spki,
    sign: async (data) => signWithKeyObject(key, algorithm, data),
  };
}
