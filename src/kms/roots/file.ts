import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

import { KmsError } from '../errors.ts';
import { assertKcv, keyCheckValue, symmetricRoot } from './symmetric.ts';
import type { RootOfTrust, RootRecord } from './types.ts';

/**
 * Creates the root key file (32 random bytes, base64, mode 0600). A file left by an init that
 * crashed before its database commit is adopted rather than overwritten: a key file is never lost.
 */
export function createFileRoot(id: string, path: string): { root: RootOfTrust; record: RootRecord } {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(path, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  }
  const key = readKeyFile(path, id);
  const record: RootRecord = { id, provider: 'file', params: {}, kcv: keyCheckValue(key) };
  return { root: symmetricRoot(id, 'file', key), record };
}

function readKeyFile(path: string, rootId: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new KmsError(
      'KeyUnavailable',
      `root key file ${path} cannot be read (${(err as NodeJS.ErrnoException).code}); root ${rootId} needs it`,
    );
  }
  if ((statSync(path).mode & 0o077) !== 0) {
    try {
      chmodSync(path, 0o600);
    } catch {
      // A Docker or Kubernetes secret: a read-only mount whose mode is set where it is mounted.
    }
  }
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== 32) throw new KmsError('WrongRootKey', `root key file ${path} does not hold a 256-bit key`);
  return key;
}

export function loadFileRoot(record: RootRecord, path: string): RootOfTrust {
  const key = readKeyFile(path, record.id);
  assertKcv(key, record.kcv, `root key file ${path} does not match root ${record.id}`);
  return symmetricRoot(record.id, 'file', key);
}
