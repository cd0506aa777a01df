import { createCipheriv, createDecipheriv, hkdfSync, type KeyObject, randomBytes } from 'node:crypto';

import { encodeContext, type EncryptionContext } from './encryption-context.ts';
import { KmsError } from './errors.ts';

// KWE1: magic(4) alg(1) purpose(1) wrapping-key-id(16) version(4) | body. The whole 26-byte header
// is authenticated together with the canonical context, so no field can be relabelled.
const MAGIC = Buffer.from('KWE1', 'ascii');
const HEADER_LEN = 26;
const SALT_LEN = 32;
const NONCE_LEN = 12;
const TAG_LEN = 16;

export const ALG_AES_GCM_HKDF = 0x01;
/** AES-256-GCM computed inside a PKCS#11 token; body nonce(12) ‖ ciphertext ‖ tag(16). */
export const ALG_PKCS11_GCM = 0x02;
/** AWS KMS Encrypt; body u16 len ‖ CiphertextBlob. */
export const ALG_AWS_KMS = 0x03;
const ALGS: readonly number[] = [ALG_AES_GCM_HKDF, ALG_PKCS11_GCM, ALG_AWS_KMS];
export const KWE1_HEADER_LEN = HEADER_LEN;

export const PURPOSE = {
  kek: 0x01,
  dek: 0x02,
  privateKey: 0x03,
  appData: 0x04,
  importKey: 0x05,
  /** A service secret (EAB HMAC key, nonce MAC key) under the service-secrets KEK. */
  secret: 0x06,
} as const;
export type Purpose = (typeof PURPOSE)[keyof typeof PURPOSE];

export interface Header {
  alg: number;
  purpose: Purpose;
  /** UUID of the wrapping key (root, KEK or CA key). */
  keyId: string;
  version: number;
}

export function encodeHeader(h: Header): Buffer {
  const out = Buffer.alloc(HEADER_LEN);
  MAGIC.copy(out, 0);
  out[4] = h.alg;
  out[5] = h.purpose;
  uuidBytes(h.keyId).copy(out, 6);
  out.writeUInt32BE(h.version, 22);
  return out;
}

export function parseHeader(blob: Uint8Array): Header {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < HEADER_LEN || !b.subarray(0, 4).equals(MAGIC)) {
    throw new KmsError('InvalidCiphertext', 'not a KWE1 ciphertext');
  }
  const purpose = b[5]!;
  if (!Object.values(PURPOSE).includes(purpose as Purpose)) {
    throw new KmsError('InvalidCiphertext', `KWE1 ciphertext has unknown purpose ${purpose}`);
  }
  if (!ALGS.includes(b[4]!)) throw new KmsError('InvalidCiphertext', `KWE1 ciphertext has unsupported alg ${b[4]}`);
  return { alg: b[4]!, purpose: purpose as Purpose, keyId: uuidString(b.subarray(6, 22)), version: b.readUInt32BE(22) };
}

function subkey(wrappingKey: KeyObject, salt: Buffer, header: Buffer): Buffer {
  const info = Buffer.concat([Buffer.from('keyward/kwe1'), header]);
  return Buffer.from(hkdfSync('sha256', wrappingKey.export(), salt, info, 32));
}

/** Encrypts under a per-message HKDF subkey, so no GCM nonce budget applies to the wrapping key. */
export function seal(
  wrappingKey: KeyObject,
  header: Omit<Header, 'alg'>,
  context: EncryptionContext,
  plaintext: Uint8Array,
): Buffer {
  const head = encodeHeader({ ...header, alg: ALG_AES_GCM_HKDF });
  const salt = randomBytes(SALT_LEN);
  const nonce = randomBytes(NONCE_LEN);
  const key = subkey(wrappingKey, salt, head);
  try {
    const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
    cipher.setAAD(Buffer.concat([head, encodeContext(context)]));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([head, salt, nonce, body, cipher.getAuthTag()]);
  } finally {
    key.fill(0);
  }
}

export interface Expected {
  purpose: Purpose;
  keyId?: string;
  version?: number;
}

/** Decrypts a KWE1 blob, refusing any header that is not the one the caller expects. */
export function open(wrappingKey: KeyObject, blob: Uint8Array, expected: Expected, context: EncryptionContext): Buffer {
  const header = parseHeader(blob);
  checkExpected(header, expected);
  if (header.alg !== ALG_AES_GCM_HKDF)
    throw new KmsError('InvalidCiphertext', `ciphertext uses alg ${header.alg}, which needs its root provider`);
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < HEADER_LEN + SALT_LEN + NONCE_LEN + TAG_LEN) {
    throw new KmsError('InvalidCiphertext', 'KWE1 ciphertext is truncated');
  }
  const head = b.subarray(0, HEADER_LEN);
  const salt = b.subarray(HEADER_LEN, HEADER_LEN + SALT_LEN);
  const nonce = b.subarray(HEADER_LEN + SALT_LEN, HEADER_LEN + SALT_LEN + NONCE_LEN);
  const body = b.subarray(HEADER_LEN + SALT_LEN + NONCE_LEN, b.length - TAG_LEN);
  const tag = b.subarray(b.length - TAG_LEN);
  const key = subkey(wrappingKey, salt, head);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
    decipher.setAAD(Buffer.concat([head, encodeContext(context)]));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    throw new KmsError(
      'InvalidCiphertext',
      `ciphertext wrapped by ${header.keyId} v${header.version} failed authentication (altered, swapped or wrong key)`,
    );
  } finally {
    key.fill(0);
  }
}

/** Refuses a header that is not the one the caller expects (purpose, wrapping key, version). */
export function checkExpected(header: Header, expected: Expected): void {
  if (header.purpose !== expected.purpose) {
    throw new KmsError(
      'InvalidCiphertext',
      `ciphertext purpose ${header.purpose} is not the expected ${expected.purpose}`,
    );
  }
  if (expected.keyId !== undefined && header.keyId !== expected.keyId) {
    throw new KmsError('InvalidCiphertext', `ciphertext is wrapped by ${header.keyId}, not ${expected.keyId}`);
  }
  if (expected.version !== undefined && header.version !== expected.version) {
    throw new KmsError('InvalidCiphertext', `ciphertext names version ${header.version}, not ${expected.version}`);
  }
}

/** The AAD of every KWE1 algorithm: the 26-byte header followed by the canonical context. */
export function aadOf(head: Uint8Array, context: EncryptionContext): Buffer {
  return Buffer.concat([head.subarray(0, HEADER_LEN), encodeContext(context)]);
}

function uuidBytes(id: string): Buffer {
  const hex = id.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new KmsError('InvalidInput', `"${id}" is not a UUID`);
  return Buffer.from(hex, 'hex');
}

function uuidString(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
