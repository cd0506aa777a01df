import { createPublicKey, type KeyObject, sign as cryptoSign } from 'node:crypto';

/** The signature schemes Keyward signs with; ECDSA signatures are DER `Ecdsa-Sig-Value`. */
export type SignatureAlgorithm = 'ecdsa-sha256' | 'ecdsa-sha384' | 'rsa-sha256' | 'ed25519';

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
}

export type SignContext = Readonly<Record<string, string>>;

export function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ecdsa-sha256';
    if (curve === 'secp384r1') return 'ecdsa-sha384';
    throw new Error(`unsupported EC curve ${curve ?? 'unknown'}`);
  }
  if (type === 'rsa') return 'rsa-sha256';
  if (type === 'ed25519') return 'ed25519';
  throw new Error(`unsupported key type ${type ?? 'unknown'}`);
}

const DIGEST: Record<SignatureAlgorithm, string | null> = {
  'ecdsa-sha256': 'sha256',
  'ecdsa-sha384': 'sha384',
  'rsa-sha256': 'sha256',
  ed25519: null,
};

/** Signs in-process with a private KeyObject (the software backend). */
export function signWithKeyObject(key: KeyObject, algorithm: SignatureAlgorithm, data: Uint8Array): Uint8Array {
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
