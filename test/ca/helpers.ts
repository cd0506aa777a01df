import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, KeyObject, webcrypto } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { keyObjectSigner, type Signer } from '../../src/kms/signer.ts';

export type IssuerKeyType = 'P-256' | 'P-384' | 'RSA-3072';
export type SubjectKeyType = 'P-256' | 'P-384' | 'RSA-2048' | 'Ed25519';

export interface IssuerKey {
  type: IssuerKeyType;
  /** For @peculiar/x509, which signs through WebCrypto. */
  pair: webcrypto.CryptoKeyPair;
  signingAlgorithm: { name: string; hash: string };
  signer: Signer;
  spki: Uint8Array;
}

export async function issuerKey(type: IssuerKeyType): Promise<IssuerKey> {
  const alg =
    type === 'RSA-3072'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : { name: 'ECDSA', namedCurve: type };
  const pair = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const signer = keyObjectSigner(KeyObject.from(pair.privateKey));
  const signingAlgorithm =
    type === 'RSA-3072'
      ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
      : { name: 'ECDSA', hash: type === 'P-384' ? 'SHA-384' : 'SHA-256' };
  return { type, pair, signingAlgorithm, signer, spki: signer.spki };
}

export function subjectSpki(type: SubjectKeyType): Uint8Array {
  const { publicKey } =
    type === 'RSA-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'Ed25519'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('ec', { namedCurve: type });
  return new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
}

export function pem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'keyward-ca-'));
}

export function writePem(dir: string, name: string, der: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, pem(der));
  return path;
}

export function openssl(
  args: string[],
  input?: string | Uint8Array,
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'buffer' });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}
