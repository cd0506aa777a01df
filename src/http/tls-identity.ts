import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { SecureContextOptions } from 'node:tls';

import { buildSelfSignedCa } from '../ca/ca-builder.ts';
import { toPem } from '../ca/pem.ts';
import type { Issuance } from '../issuance/index.ts';
import { keyObjectSigner } from '../kms/signer.ts';

export interface TlsIdentity {
  options: SecureContextOptions;
  notAfter: Date;
  notBefore: Date;
  serial: string;
}

/** The HTTPS listener's own certificate, issued by this CA for the configured hostnames. */
export async function issueTlsIdentity(issuance: Issuance, hostnames: readonly string[]): Promise<TlsIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const issued = await issuance.issue({
    requester: { kind: 'server' },
    publicKey: { spki: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })), keyType: 'ecdsa-p256' },
    ...(hostnames[0] !== undefined ? { commonName: hostnames[0] } : {}),
    names: {
      dns: hostnames.filter((h) => isIP(h) === 0),
      ip: hostnames.filter((h) => isIP(h) !== 0),
      uri: [],
      email: [],
    },
    profile: 'tls-server',
  });
  return {
    options: { key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: issued.chainPem },
    notAfter: issued.notAfter,
    notBefore: issued.notBefore,
    serial: issued.serial,
  };
}

/** When to renew: two thirds into the lifetime, as certbot and step-ca's renewers do. */
export function renewalDelay(identity: TlsIdentity, now = Date.now()): number {
  const lifetime = identity.notAfter.getTime() - identity.notBefore.getTime();
  return Math.max(1_000, identity.notBefore.getTime() + (lifetime * 2) / 3 - now);
}

// A sealed server can't sign, not even its own HTTPS certificate. With a shares root the listener's
// identity is therefore kept in the data directory (key and chain, mode 0600, like any TLS server's
// key file) so that a restart serves HTTPS at once: ACME clients get a 503 problem, administrators
// reach the unseal endpoint. It is an ordinary leaf key, never a CA key.
const STORED = 'https-identity.pem';

export function storeTlsIdentity(dataDir: string, identity: TlsIdentity): void {
  const file = join(dataDir, STORED);
  writeFileSync(`${file}.tmp`, `${String(identity.options.key)}${String(identity.options.cert)}`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** The stored identity, if there is one that has not expired. */
export function loadTlsIdentity(dataDir: string, now = new Date()): TlsIdentity | undefined {
  let text: string;
  try {
    text = readFileSync(join(dataDir, STORED), 'utf8');
  } catch {
    return undefined;
  }
  const key = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----\n?/.exec(text)?.[0];
  const cert = text.slice(text.indexOf('-----BEGIN CERTIFICATE-----'));
  if (!key || !cert.startsWith('-----BEGIN')) return undefined;
  const leaf = new X509Certificate(cert);
  const notAfter = new Date(leaf.validTo);
  if (notAfter <= now) return undefined;
  return {
    options: { key, cert },
    notAfter,
    notBefore: new Date(leaf.validFrom),
    serial: leaf.serialNumber.toLowerCase(),
  };
}

/**
 * A self-signed stand-in for the first sealed start, before this CA ever issued the listener a
 * certificate: clients will not trust it (they should not), and it is replaced once unsealed.
 */
export async function temporaryTlsIdentity(hostnames: readonly string[]): Promise<TlsIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const now = Date.now();
  const notBefore = new Date(now - 60_000);
  const notAfter = new Date(now + 86_400_000);
  const der = await buildSelfSignedCa(
    {
      serial: randomBytes(16).map((b, i) => (i === 0 ? (b & 0x7f) | 0x01 : b)),
      notBefore,
      notAfter,
      subject: { commonName: `${hostnames[0] ?? 'keyward'} (sealed, temporary)` },
      subjectPublicKeyInfo: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
      pathLength: 0,
    },
    keyObjectSigner(privateKey),
  );
  return {
    options: { key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: toPem(der) },
    notAfter,
    notBefore,
    serial: 'temporary',
  };
}
