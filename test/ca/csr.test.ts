import { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { MAX_CSR_BYTES, parseCsr, type ParsedCsr } from '../../src/ca/csr.ts';
import { x509 } from '../../src/ca/x509.ts';
import { KeywardError } from '../../src/core/errors.ts';
import { openssl, tempDir } from './helpers.ts';

type Alg = { name: string; namedCurve?: string; modulusLength?: number; publicExponent?: Uint8Array; hash?: string };

const ALGS: Record<string, Alg> = {
  'ecdsa-p256': { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' },
  'ecdsa-p384': { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' },
  rsa: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
  ed25519: { name: 'Ed25519' },
};

async function peculiarCsr(alg: Alg, name = 'CN=app.example.test'): Promise<x509.Pkcs10CertificateRequest> {
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  return x509.Pkcs10CertificateRequestGenerator.create({
    name,
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'app.example.test' },
        { type: 'ip', value: '2001:db8:0:0:0:0:0:1' },
        { type: 'ip', value: '192.0.2.7' },
        { type: 'url', value: 'spiffe://example.test/app' },
        { type: 'email', value: 'ops@example.test' },
      ]),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature),
    ],
  });
}

/** CSR from the openssl binary with a freshly generated key; returns PEM text. */
function opensslCsr(newkey: string[], extra: string[] = []): string {
  const dir = tempDir();
  const key = join(dir, 'key.pem');
  const gen = openssl(['genpkey', ...newkey, '-out', key]);
  expect(gen.status, gen.stderr).toBe(0);
  const out = join(dir, 'req.pem');
  const r = openssl(['req', '-new', '-key', key, '-subj', '/CN=legacy.example.test', '-out', out, ...extra]);
  expect(r.status, r.stderr).toBe(0);
  return readFileSync(out, 'utf8');
}

function refusal(input: string | Uint8Array): KeywardError {
  try {
    parseCsr(input);
  } catch (e) {
    expect(e).toBeInstanceOf(KeywardError);
    return e as KeywardError;
  }
  throw new Error('CSR was accepted');
}

describe('good CSRs', () => {
  it.each(Object.keys(ALGS))('%s from @peculiar/x509 (PEM and DER)', async (kind) => {
    const csr = await peculiarCsr(ALGS[kind]!);
    const der = new Uint8Array(csr.rawData);
    const expected: Partial<ParsedCsr> = {
      keyType: kind as ParsedCsr['keyType'],
      commonName: 'app.example.test',
      sans: {
        dns: ['app.example.test'],
        ip: ['2001:db8::1', '192.0.2.7'],
        uri: ['spiffe://example.test/app'],
        email: ['ops@example.test'],
      },
    };
    for (const input of [csr.toString('pem'), der]) {
      const parsed = parseCsr(input);
      expect(parsed).toMatchObject(expected);
      expect(Buffer.from(parsed.subjectPublicKeyInfo).equals(Buffer.from(csr.publicKey.rawData))).toBe(true);
      expect(Buffer.from(parsed.der).equals(Buffer.from(der))).toBe(true);
      expect(parsed.rsaBits).toBe(kind === 'rsa' ? 2048 : undefined);
    }
  });

  it('an openssl RSA-3072 CSR with SANs and no extensions besides', () => {
    const pem = opensslCsr(
      ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:3072'],
      ['-addext', 'subjectAltName=DNS:legacy.example.test,IP:10.0.0.9'],
    );
    expect(parseCsr(pem)).toMatchObject({
      keyType: 'rsa',
      rsaBits: 3072,
      commonName: 'legacy.example.test',
      sans: { dns: ['legacy.example.test'], ip: ['10.0.0.9'], uri: [], email: [] },
    });
  });

  it('a CSR with no CN and no SANs parses (policy decides whether that is enough)', async () => {
    const csr = await peculiarCsr(ALGS['ecdsa-p256']!, 'O=Example');
    const parsed = parseCsr(csr.toString('pem'));
    expect(parsed.commonName).toBeUndefined();
  });
});

describe('refused CSRs', () => {
  it('tampered signature → badCSR', async () => {
    const der = new Uint8Array((await peculiarCsr(ALGS['ecdsa-p256']!)).rawData);
    der[der.length - 3]! ^= 0x01;
    const e = refusal(der);
    expect(e.code).toBe('badCSR');
    expect(e.message).toBe('CSR signature is invalid');
  });

  it('tampered request info → badCSR', async () => {
    const csr = await peculiarCsr(ALGS.rsa!);
    const der = new Uint8Array(csr.rawData);
    const at = Buffer.from(der).indexOf('app.example.test');
    der[at]! = 'b'.charCodeAt(0);
    const e = refusal(der);
    expect([e.code, e.message]).toEqual(['badCSR', 'CSR signature is invalid']);
  });

  it('RSA-1024 → badPublicKey', () => {
    const e = refusal(opensslCsr(['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']));
    expect([e.code, e.message]).toEqual(['badPublicKey', 'RSA key of 1024 bits is too small (minimum 2048)']);
  });

  it.each([
    ['P-521', 'unsupported elliptic curve P-521'],
    ['secp256k1', 'unsupported elliptic curve secp256k1'],
    ['brainpoolP256r1', 'unsupported elliptic curve 1.3.36.3.3.2.8.1.1.7'],
  ])('curve %s → badPublicKey', (curve, message) => {
    const e = refusal(opensslCsr(['-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${curve}`]));
    expect([e.code, e.message]).toEqual(['badPublicKey', message]);
  });

  it('Ed448 → badPublicKey', () => {
    const e = refusal(opensslCsr(['-algorithm', 'ED448']));
    expect([e.code, e.message]).toEqual(['badPublicKey', 'unsupported public key algorithm Ed448']);
  });

  it('SHA-1 signature → badCSR', () => {
    const e = refusal(opensslCsr(['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-sha1']));
    expect([e.code, e.message]).toEqual(['badCSR', 'unsupported CSR signature algorithm ecdsa-with-SHA1']);
  });

  it('unsupported SAN type → badCSR', () => {
    const e = refusal(
      opensslCsr(
        ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
        ['-addext', 'subjectAltName=DNS:a.example.test,RID:1.2.3.4'],
      ),
    );
    expect([e.code, e.message]).toEqual(['badCSR', 'CSR subjectAltName has an unsupported name type [8]']);
  });

  it.each([
    ['garbage bytes', Uint8Array.from([1, 2, 3, 4, 5]), 'CSR is not valid DER: trailing data after DER value'],
    ['empty', new Uint8Array(0), 'CSR is empty'],
    ['not PEM', 'hello', 'CSR is not a PEM "CERTIFICATE REQUEST" block'],
    [
      'bad base64',
      '-----BEGIN CERTIFICATE REQUEST-----\nMII*\n-----END CERTIFICATE REQUEST-----\n',
      'CSR is not a PEM "CERTIFICATE REQUEST" block',
    ],
    [
      'a certificate',
      '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
      'CSR is not a PEM "CERTIFICATE REQUEST" block',
    ],
    ['too large', new Uint8Array(MAX_CSR_BYTES + 1), `CSR is larger than ${MAX_CSR_BYTES} bytes`],
  ] as const)('%s → badCSR', (_, input, message) => {
    const e = refusal(input);
    expect([e.code, e.message]).toEqual(['badCSR', message]);
  });

  it('trailing data after the DER → badCSR', async () => {
    const der = new Uint8Array((await peculiarCsr(ALGS['ecdsa-p256']!)).rawData);
    const e = refusal(Uint8Array.from([...der, 0]));
    expect([e.code, e.message]).toEqual(['badCSR', 'CSR is not valid DER: trailing data after DER value']);
  });

  it('an EC point off the curve → badPublicKey', async () => {
    const csr = await peculiarCsr(ALGS['ecdsa-p256']!);
    const der = new Uint8Array(csr.rawData);
    const spki = new Uint8Array(csr.publicKey.rawData);
    const at = Buffer.from(der).indexOf(Buffer.from(spki));
    der[at + spki.length - 1]! ^= 0x01; // last byte of Y
    const e = refusal(der);
    expect([e.code, e.message]).toEqual(['badPublicKey', 'public key is invalid']);
  });
});
