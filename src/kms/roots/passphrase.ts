import { randomBytes, scryptSync } from 'node:crypto';

import { KmsError } from '../errors.ts';
import { assertKcv, keyCheckValue, symmetricRoot } from './symmetric.ts';
import type { RootOfTrust, RootRecord } from './types.ts';

interface ScryptParams {
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
}

// N=2^17 needs 128 MiB; node's default maxmem (32 MiB) would refuse it.
const DEFAULTS = { N: 2 ** 17, r: 8, p: 1 };

function derive(passphrase: string, params: ScryptParams): Buffer {
  if (passphrase.length === 0) throw new KmsError('InvalidInput', 'the root passphrase must not be empty');
  const secret = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  try {
    return scryptSync(secret, Buffer.from(params.salt, 'base64'), 32, {
      N: params.N,
      r: params.r,
      p: params.p,
      maxmem: 256 * 1024 * 1024,
    });
  } finally {
    secret.fill(0);
  }
}

export function createPassphraseRoot(id: string, passphrase: string): { root: RootOfTrust; record: RootRecord } {
  const params: ScryptParams = { kdf: 'scrypt', ...DEFAULTS, salt: randomBytes(16).toString('base64') };
  const key = derive(passphrase, params);
  const record: RootRecord = { id, provider: 'passphrase', params: { ...params }, kcv: keyCheckValue(key) };
  return { root: symmetricRoot(id, 'passphrase', key), record };
}

export function loadPassphraseRoot(record: RootRecord, passphrase: string): RootOfTrust {
  const params = record.params as unknown as ScryptParams;
  const key = derive(passphrase, params);
  assertKcv(key, record.kcv, `the passphrase does not match root ${record.id}`);
  return symmetricRoot(record.id, 'passphrase', key);
}
