import 'reflect-metadata';

import { webcrypto } from 'node:crypto';
import type { Server as NetServer } from 'node:net';
import { createServer } from 'node:net';

import * as x509 from '@peculiar/x509';

import { toPem } from '../../src/ca/pem.ts';
import type { ValidationConfig } from '../../src/validation/index.ts';

export async function listen(server: NetServer, host = '127.0.0.1'): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

export function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    (server as NetServer & { closeAllConnections?: () => void }).closeAllConnections?.();
  });
}

/** A loopback port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await closeServer(s);
  return port;
}

export function testConfig(overrides: Partial<ValidationConfig> = {}): ValidationConfig {
  return {
    httpPort: 80,
    tlsAlpnPort: 443,
    timeoutMs: 3_000,
    maxRedirects: 10,
    maxBodyBytes: 8 * 1024,
    ...overrides,
  };
}

export interface TestCert {
  certPem: string;
  keyPem: string;
}

/** A self-signed P-256 certificate with whatever SANs and extra extensions a test wants. */
export async function selfSignedCert(opts: {
  sans: { type: 'dns' | 'ip'; value: string }[];
  extensions?: x509.Extension[];
}): Promise<TestCert> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=ACME validation test',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      ...(opts.sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(opts.sans)] : []),
      ...(opts.extensions ?? []),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = toPem(pkcs8, 'PRIVATE KEY');
  return { certPem: cert.toString('pem'), keyPem };
}
