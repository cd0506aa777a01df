import { constants, createPrivateKey, createPublicKey, privateDecrypt, publicEncrypt } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { KmsError } from './errors.ts';

// Shares are handed out once. Written to files they go one per file (mode 0600); encrypted to a
// holder's RSA public key they are RSA-OAEP (SHA-256, MGF1-SHA-256) of the share's text, so the
// holder can read theirs with nothing but openssl:
//   openssl pkeyutl -decrypt -inkey holder.key -pkeyopt rsa_padding_mode:oaep \
//     -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in share-2-of-5.enc

/** Where the shares of a new share set went: printed (returned) or written to files. */
export interface DeliveredShares {
  threshold: number;
  count: number;
  setId: string;
  /** The shares themselves, when they are to be shown (no directory given). */
  shares?: string[];
  /** The files written, share 1 first. */
  files?: string[];
  encrypted: boolean;
}

export interface ShareDelivery {
  /** Directory to write share-<i>-of-<n>.txt (or .enc) into. */
  dir?: string;
  /** RSA public keys (PEM), one per share in order: share i is encrypted to key i. */
  holderKeys?: string[];
}

/** RSA-OAEP-SHA-256 of a share's text to one holder's public key. */
export function encryptShare(share: string, holderKeyPem: string): Buffer {
  const key = createPublicKey(holderKeyPem);
  if (key.asymmetricKeyType !== 'rsa')
    throw new KmsError('InvalidInput', 'a share holder key must be an RSA public key (2048 bits or more)');
  return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, Buffer.from(share));
}

export function decryptShare(blob: Uint8Array, holderPrivateKeyPem: string): string {
  try {
    return privateDecrypt(
      { key: createPrivateKey(holderPrivateKeyPem), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      blob,
    ).toString('utf8');
  } catch {
    throw new KmsError(
      'InvalidShare',
      'the share file does not decrypt with this holder key (another holder’s share, or another key)',
    );
  }
}

/** Writes or returns the shares of a new set, encrypting each to its holder when keys are given. */
export function deliverShares(
  set: { setId: string; threshold: number; count: number; shares: string[] },
  delivery: ShareDelivery,
): DeliveredShares {
  const { holderKeys, dir } = delivery;
  const base = { threshold: set.threshold, count: set.count, setId: set.setId, encrypted: !!holderKeys?.length };
  if (holderKeys?.length && holderKeys.length !== set.count)
    throw new KmsError('InvalidInput', `${set.count} shares need ${set.count} holder keys (got ${holderKeys.length})`);
  if (holderKeys?.length && !dir)
    throw new KmsError('InvalidInput', 'encrypted shares are written to files: give a directory for them');
  const blobs = set.shares.map((s, i) =>
    holderKeys?.length ? encryptShare(s, holderKeys[i]!) : Buffer.from(`${s}\n`),
  );
  if (!dir) return { ...base, shares: set.shares };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = blobs.map((blob, i) => {
    const file = join(dir, `share-${i + 1}-of-${set.count}.${holderKeys?.length ? 'enc' : 'txt'}`);
    // 'wx': never overwrite a share someone has not collected yet.
    writeFileSync(file, blob, { mode: 0o600, flag: 'wx' });
    return file;
  });
  return { ...base, files };
}
