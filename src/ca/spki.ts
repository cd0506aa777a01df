import { children, decodeOid, DerError, expectTag, readWhole, TAG, type Tlv, valueOf } from './der.ts';
import { OID } from './oids.ts';

/** Subject key types Keyward certifies. */
export type KeyType =
  | { readonly kind: 'ecdsa-p256' }
  | { readonly kind: 'ecdsa-p384' }
  | { readonly kind: 'rsa'; readonly bits: number }
  | { readonly kind: 'ed25519' };

export function keyTypeLabel(k: KeyType): string {
  return k.kind === 'rsa' ? `rsa-${k.bits}` : k.kind;
}

export const RSA_MIN_BITS = 2048;
/** Bounds verification cost an outsider can make us pay. */
export const RSA_MAX_BITS = 8192;

/** The key is well-formed DER but not one we certify, or not a public key at all. */
export class SpkiError extends Error {
  override readonly name = 'SpkiError';
}

export interface SpkiInfo {
  readonly keyType: KeyType;
  /** Content of the subjectPublicKey BIT STRING without the unused-bits octet (the SKI input). */
  readonly publicKeyBits: Uint8Array;
}

const CURVE_NAMES: Record<string, string> = {
  [OID.secp521r1]: 'P-521',
  [OID.secp256k1]: 'secp256k1',
};

function bitLength(magnitude: Uint8Array): number {
  let i = 0;
  while (i < magnitude.length && magnitude[i] === 0) i++;
  if (i === magnitude.length) return 0;
  return (magnitude.length - i - 1) * 8 + (32 - Math.clz32(magnitude[i]!));
}

function rsaBits(bits: Uint8Array): number {
  const root = readWhole(bits, TAG.SEQUENCE);
  const [n, e, ...rest] = children(bits, root);
  if (rest.length > 0) throw new DerError('RSAPublicKey has extra fields');
  const nBytes = valueOf(bits, expectTag(n, TAG.INTEGER, 'RSA modulus'));
  const eBytes = valueOf(bits, expectTag(e, TAG.INTEGER, 'RSA exponent'));
  if ((nBytes[0]! & 0x80) !== 0 || (eBytes[0]! & 0x80) !== 0) throw new SpkiError('RSA key has a negative component');
  const eLast = eBytes[eBytes.length - 1]!;
  if ((eLast & 1) === 0 || bitLength(eBytes) < 2) throw new SpkiError('RSA public exponent is invalid');
  return bitLength(nBytes);
}

/**
 * Structural check and classification of a DER SubjectPublicKeyInfo, cheap enough for every
 * certificate. It does not check that an EC point lies on its curve; CSR parsing does that.
 */
export function inspectSpki(spki: Uint8Array): SpkiInfo {
  let root: Tlv;
  let algOid: string;
  let params: Tlv | undefined;
  let bits: Uint8Array;
  try {
    root = readWhole(spki, TAG.SEQUENCE);
    const [alg, key, ...rest] = children(spki, root);
    if (rest.length > 0) throw new DerError('extra fields');
    const algParts = children(spki, expectTag(alg, TAG.SEQUENCE, 'AlgorithmIdentifier'));
    if (algParts.length > 2) throw new DerError('AlgorithmIdentifier has extra fields');
    algOid = decodeOid(valueOf(spki, expectTag(algParts[0], TAG.OID, 'algorithm OID')));
    params = algParts[1];
    const keyBits = valueOf(spki, expectTag(key, TAG.BIT_STRING, 'subjectPublicKey'));
    if (keyBits.length < 2 || keyBits[0] !== 0) throw new DerError('bad subjectPublicKey BIT STRING');
    bits = keyBits.subarray(1);
  } catch (e) {
    if (e instanceof DerError) throw new SpkiError(`malformed SubjectPublicKeyInfo: ${e.message}`);
    throw e;
  }

  if (algOid === OID.ecPublicKey) {
    if (params === undefined || params.tag !== TAG.OID) throw new SpkiError('EC key without a named curve');
    const curve = decodeOid(valueOf(spki, params));
    const size = curve === OID.prime256v1 ? 32 : curve === OID.secp384r1 ? 48 : 0;
    if (size === 0) throw new SpkiError(`unsupported elliptic curve ${CURVE_NAMES[curve] ?? curve}`);
    if (bits.length !== 1 + 2 * size || bits[0] !== 0x04) {
      throw new SpkiError('EC public key must be an uncompressed point');
    }
    return { keyType: { kind: size === 32 ? 'ecdsa-p256' : 'ecdsa-p384' }, publicKeyBits: bits };
  }
  if (algOid === OID.rsaEncryption) {
    if (params !== undefined && !(params.tag === TAG.NULL && params.end === params.valueStart)) {
      throw new SpkiError('RSA key parameters must be NULL');
    }
    let n: number;
    try {
      n = rsaBits(bits);
    } catch (e) {
      if (e instanceof DerError) throw new SpkiError(`malformed RSA public key: ${e.message}`);
      throw e;
    }
    if (n < RSA_MIN_BITS) throw new SpkiError(`RSA key of ${n} bits is too small (minimum ${RSA_MIN_BITS})`);
    if (n > RSA_MAX_BITS) throw new SpkiError(`RSA key of ${n} bits is too large (maximum ${RSA_MAX_BITS})`);
    return { keyType: { kind: 'rsa', bits: n }, publicKeyBits: bits };
  }
  if (algOid === OID.ed25519) {
    if (params !== undefined) throw new SpkiError('Ed25519 key must not have parameters');
    if (bits.length !== 32) throw new SpkiError('Ed25519 public key must be 32 bytes');
    return { keyType: { kind: 'ed25519' }, publicKeyBits: bits };
  }
  throw new SpkiError(`unsupported public key algorithm ${algOid === OID.ed448 ? 'Ed448' : algOid}`);
}
