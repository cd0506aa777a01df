/**
 * A throwaway root → intermediate → leaf hierarchy for tests, built with @peculiar/x509 (an
 * independent implementation, so our own encoders are checked against something other than
 * themselves), plus a small runner for the real `openssl` binary.
 *
 * The test setup file imports 'reflect-metadata' before this module loads @peculiar/x509.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, KeyObject, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export type TestKeyAlgorithm = 'P-256' | 'P-384' | 'RSA-2048';

export interface TestCertificate {
  der: Uint8Array;
  pem: string;
  /** Serial as lower-case hex without leading zeros, the way `openssl -serial 0x…` takes it. */
  serialHex: string;
}

export interface TestCa extends TestCertificate {
  /** The CA's private key as a node KeyObject (feed it to `keyObjectSigner`). */
  privateKey: KeyObject;
}

export interface TestPki {
  root: TestCa;
  intermediate: TestCa;
  leaf: TestCertificate & { privateKey: KeyObject };
  /** Intermediate then root, PEM: what `-CAfile` wants to verify anything the intermediate signs. */
  chainPem: string;
}

export interface TestPkiOptions {
  /** Key type of the intermediate, the one tests sign CRLs / OCSP with. Root and leaf are P-256. */
  intermediateKey?: TestKeyAlgorithm;
  /** Hex serial for the leaf; random when absent. */
  leafSerial?: string;
  now?: Date;
}

const DAY = 86_400_000;

function keyParams(alg: TestKeyAlgorithm): {
  gen: RsaHashedKeyGenParams | EcKeyGenParams;
  sign: Algorithm | EcdsaParams;
} {
  if (alg === 'RSA-2048') {
    return {
      gen: {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      },
      sign: { name: 'RSASSA-PKCS1-v1_5' },
    };
  }
  return {
    gen: { name: 'ECDSA', namedCurve: alg },
    sign: { name: 'ECDSA', hash: alg === 'P-384' ? 'SHA-384' : 'SHA-256' } as EcdsaParams,
  };
}

async function generateKeys(alg: TestKeyAlgorithm): Promise<CryptoKeyPair> {
  const { gen } = keyParams(alg);
  return (await webcrypto.subtle.generateKey(gen, true, ['sign', 'verify'])) as CryptoKeyPair;
}

function randomSerialHex(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return Buffer.from(bytes).toString('hex');
}

function toTestCertificate(cert: x509.X509Certificate): TestCertificate {
  return {
    der: new Uint8Array(cert.rawData),
    pem: cert.toString('pem') + '\n',
    serialHex: cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
  };
}

function caExtensions(pathLength: number | undefined): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
      true,
    ),
  ];
}

export async function createTestPki(opts: TestPkiOptions = {}): Promise<TestPki> {
  const now = opts.now ?? new Date();
  const notBefore = new Date(now.getTime() - DAY);
  const notAfter = new Date(now.getTime() + 365 * DAY);
  const interAlg = opts.intermediateKey ?? 'P-256';

  const rootKeys = await generateKeys('P-256');
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: 'CN=Keyward Test Root',
    notBefore,
    notAfter,
    keys: rootKeys,
    signingAlgorithm: keyParams('P-256').sign,
    extensions: [...caExtensions(1), await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey)],
  });

  const interKeys = await generateKeys(interAlg);
  const intermediate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=Keyward Test Intermediate ${interAlg}, O=Keyward Tests`,
    issuer: root.subject,
    notBefore,
    notAfter,
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: keyParams('P-256').sign,
    extensions: [
      ...caExtensions(0),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });

  const leafKeys = await generateKeys('P-256');
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: opts.leafSerial ?? randomSerialHex(),
    subject: 'CN=service.test',
    issuer: intermediate.subject,
    notBefore,
    notAfter: new Date(now.getTime() + 7 * DAY),
    publicKey: leafKeys.publicKey,
    signingKey: interKeys.privateKey,
    signingAlgorithm: keyParams(interAlg).sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'service.test' }]),
      await x509.AuthorityKeyIdentifierExtension.create(interKeys.publicKey),
    ],
  });

  const rootT = toTestCertificate(root);
  const interT = toTestCertificate(intermediate);
  return {
    root: { ...rootT, privateKey: KeyObject.from(rootKeys.privateKey) },
    intermediate: { ...interT, privateKey: KeyObject.from(interKeys.privateKey) },
    leaf: { ...toTestCertificate(leaf), privateKey: KeyObject.from(leafKeys.privateKey) },
    chainPem: interT.pem + rootT.pem,
  };
}

/** A fresh P-256 key pair as node KeyObjects plus its DER SubjectPublicKeyInfo. */
export function p256KeyPair(): { privateKey: KeyObject; spki: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { privateKey, spki: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })) };
}

/** A temporary directory removed by `cleanup` (call it from afterAll). */
export function tempDir(prefix = 'keyward-test-'): {
  path: string;
  file: (name: string, data?: string | Uint8Array) => string;
  cleanup: () => void;
} {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    file: (name, data) => {
      const p = join(path, name);
      if (data !== undefined) writeFileSync(p, data);
      return p;
    },
    cleanup: () => rmSync(path, { recursive: true, force: true }),
  };
}

export interface OpensslResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real openssl binary; never throws on a non-zero exit, so tests can assert on failures. */
export function openssl(args: readonly string[], opts: { cwd?: string; input?: Uint8Array } = {}): OpensslResult {
  const r = spawnSync('openssl', args, {
    cwd: opts.cwd,
    input: opts.input,
    encoding: 'utf8',
    timeout: 60_000,
    maxBuffer: 512 * 1024 * 1024,
  });
  if (r.error !== undefined) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
