import { createHash } from 'node:crypto';

import { children, DerError, expectTag, readWhole, TAG, valueOf } from './der.ts';

/**
 * The SHA-1 of a subjectPublicKey's bits: a key identifier by RFC 5280 4.2.1.2 method 1, and the
 * KeyHash an OCSP responder is named by (RFC 6960 4.2.1).
 */
export function keyIdentifierOf(publicKeyBits: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha1').update(publicKeyBits).digest());
}

/**
 * The subjectPublicKey BIT STRING content of a DER SubjectPublicKeyInfo, without its unused-bits
 * octet. Reads the structure only: CA keys are not subject to the subscriber key policy.
 */
export function publicKeyBitsOf(spki: Uint8Array): Uint8Array {
  const root = readWhole(spki, TAG.SEQUENCE);
  const [, key] = children(spki, root);
  const bits = valueOf(spki, expectTag(key, TAG.BIT_STRING, 'subjectPublicKey'));
  if (bits.length < 1 || bits[0] !== 0) throw new DerError('subjectPublicKey has unused bits');
  return bits.subarray(1);
}
