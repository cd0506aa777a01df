import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';

import { open, PURPOSE, seal } from '../container.ts';
import { KmsError } from '../errors.ts';
import type { KekRef, RootOfTrust } from './types.ts';

/** Key check value: lets a wrong root key be named as such instead of surfacing as a GCM failure. */
export function keyCheckValue(rootKey: Uint8Array): Buffer {
  return createHmac('sha256', rootKey).update('keyward/kcv/v1').digest().subarray(0, 16);
}

export function assertKcv(rootKey: Uint8Array, expected: Uint8Array | null, message: string): void {
  if (!expected) return;
  const actual = keyCheckValue(rootKey);
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected))
    throw new KmsError('WrongRootKey', message);
}

export function kekContext(ref: KekRef): Record<string, string> {
  return { 'kw:purpose': 'kek', 'kw:kek': ref.kekId, 'kw:ver': String(ref.version), 'kw:install': ref.installId };
}

/** A root of trust whose key is 32 bytes held in process memory (file, passphrase and shares providers). */
export function symmetricRoot(id: string, provider: 'file' | 'passphrase' | 'shares', rootKey: Buffer): RootOfTrust {
  const key: KeyObject = createSecretKey(rootKey);
  rootKey.fill(0);
  return {
    id,
    provider,
    wrapKek: async (kek, ref) => seal(key, { purpose: PURPOSE.kek, keyId: id, version: 1 }, kekContext(ref), kek),
    unwrapKek: async (blob, ref) => open(key, blob, { purpose: PURPOSE.kek, keyId: id }, kekContext(ref)),
  };
}
