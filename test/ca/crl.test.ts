import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildCrl, type CrlEntry, CrlError, REVOCATION_REASONS } from '../../src/ca/crl.ts';
import { keyObjectSigner } from '../../src/kms/signer.ts';
import { createTestPki, openssl, tempDir, type TestKeyAlgorithm, type TestPki } from '../support/pki.ts';

const HOUR = 3_600_000;
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.length % 2 ? `0${s}` : s, 'hex'));

let dir: ReturnType<typeof tempDir>;
const pkis = new Map<TestKeyAlgorithm, TestPki>();

beforeAll(async () => {
  dir = tempDir();
  pkis.set('P-256', await createTestPki({ intermediateKey: 'P-256' }));
  pkis.set('RSA-2048', await createTestPki({ intermediateKey: 'RSA-2048' }));
  pkis.set('P-384', await createTestPki({ intermediateKey: 'P-384' }));
});

afterAll(() => dir?.cleanup());

function pkiFor(alg: TestKeyAlgorithm): TestPki {
  return pkis.get(alg)!;
}

function issuerOf(pki: TestPki): { certificate: Uint8Array; signer: ReturnType<typeof keyObjectSigner> } {
  return { certificate: pki.intermediate.der, signer: keyObjectSigner(pki.intermediate.privateKey) };
}

/** `openssl crl -text`, verifying the signature against the chain. */
function opensslCrl(pki: TestPki, crl: Uint8Array): { text: string; err: string; status: number | null } {
  const name = Math.random().toString(36).slice(2);
  const r = openssl([
    'crl',
    '-inform',
    'DER',
    '-in',
    dir.file(`${name}.crl`, crl),
    '-CAfile',
    dir.file(`${name}-chain.pem`, pki.chainPem),
    '-noout',
    '-text',
  ]);
  return { text: r.stdout, err: r.stderr, status: r.status };
}

function interSki(pki: TestPki): string {
  const r = openssl([
    'x509',
    '-in',
    dir.file('ski.pem', pki.intermediate.pem),
    '-noout',
    '-ext',
    'subjectKeyIdentifier',
  ]);
  return r.stdout.split('\n')[1]!.trim();
}

const revokedAt = new Date('2026-03-01T10:20:30Z');
const entries: CrlEntry[] = [
  { serialNumber: unhex('1a2b3c4d'), revokedAt, reason: REVOCATION_REASONS.keyCompromise },
  { serialNumber: unhex('80' + 'ff'.repeat(18)), revokedAt, reason: REVOCATION_REASONS.superseded }, // top bit set: 20 octets with the sign octet
  { serialNumber: unhex('05'), revokedAt, reason: REVOCATION_REASONS.unspecified },
  { serialNumber: unhex('0006'), revokedAt }, // leading zero is dropped
  { serialNumber: unhex('77'), revokedAt, reason: REVOCATION_REASONS.certificateHold },
  { serialNumber: unhex('78'), revokedAt, reason: REVOCATION_REASONS.aACompromise },
];

describe.each(['P-256', 'P-384', 'RSA-2048'] as const)('buildCrl with a %s issuer', (alg) => {
  it('produces a CRL openssl verifies, with serials, reasons, number, IDP and AKI', async () => {
    const pki = pkiFor(alg);
    const thisUpdate = new Date();
    const crl = await buildCrl({
      issuer: issuerOf(pki),
      crlNumber: 1234567890123456789n,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + 24 * HOUR),
      entries,
      issuingDistributionPoint: { url: 'http://crl.keyward.test/inter.crl', onlyContainsUserCerts: true },
    });
    const { text, err, status } = opensslCrl(pki, crl);
    expect(err).toContain('verify OK');
    expect(status).toBe(0);
    expect(text).toContain('Version 2 (0x1)');
    const sigAlg = {
      'P-256': 'ecdsa-with-SHA256',
      'P-384': 'ecdsa-with-SHA384',
      'RSA-2048': 'sha256WithRSAEncryption',
    }[alg];
    expect(text).toContain(`Signature Algorithm: ${sigAlg}`);
    expect(text).toMatch(/CRL Number:\s*\n\s+1234567890123456789\n/);
    expect(text).toMatch(
      /Issuing Distribution Point: critical\s*\n\s+Full Name:\s*\n\s+URI:http:\/\/crl\.keyward\.test\/inter\.crl\s+Only User Certificates/,
    );
    expect(text).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${interSki(pki)}`));
    expect(text).toContain('Revocation Date: Mar  1 10:20:30 2026 GMT');

    // Each serial with its reason (or none), in order.
    const blocks = text.split('Serial Number: ').slice(1);
    const parsed = blocks.map((b) => ({
      serial: b.split('\n')[0]!.trim(),
      reason: /CRL Reason Code:\s*\n\s+(.+)/.exec(b)?.[1]?.trim(),
    }));
    expect(parsed).toEqual([
      { serial: '1A2B3C4D', reason: 'Key Compromise' },
      { serial: '80' + 'FF'.repeat(18), reason: 'Superseded' },
      { serial: '05', reason: undefined },
      { serial: '06', reason: undefined },
      { serial: '77', reason: 'Certificate Hold' },
      { serial: '78', reason: 'AA Compromise' },
    ]);

    // The top-bit serial carries its sign octet: INTEGER of 20 content octets, 00 80 FF...
    expect(Buffer.from(crl).includes(Buffer.from('0214' + '0080' + 'ff'.repeat(18), 'hex'))).toBe(true);

    // An independent parser agrees.
    const parsedByLib = new x509.X509Crl(new Uint8Array(crl));
    expect(parsedByLib.entries.map((e) => e.serialNumber.toLowerCase())).toEqual([
      '1a2b3c4d',
      '80' + 'ff'.repeat(18),
      '05',
      '06',
      '77',
      '78',
    ]);
    expect(parsedByLib.entries.map((e) => e.reason)).toEqual([1, 4, undefined, undefined, 6, 10]);
  });

  it('omits revokedCertificates when empty and the IDP when not asked for', async () => {
    const pki = pkiFor(alg);
    const thisUpdate = new Date();
    const crl = await buildCrl({
      issuer: issuerOf(pki),
      crlNumber: 0n,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + HOUR),
      entries: [],
    });
    const { text, err } = opensslCrl(pki, crl);
    expect(err).toContain('verify OK');
    expect(text).toContain('No Revoked Certificates.');
    expect(text).not.toContain('Issuing Distribution Point');
    expect(text).toMatch(/CRL Number:\s*\n\s+0\n/);
  });
});

describe('buildCrl', () => {
  it('writes GeneralizedTime from 2050 on', async () => {
    const pki = pkiFor('P-256');
    const crl = await buildCrl({
      issuer: issuerOf(pki),
      crlNumber: 2n,
      thisUpdate: new Date(),
      nextUpdate: new Date('2051-01-02T03:04:05Z'),
      entries: [{ serialNumber: unhex('01'), revokedAt: new Date('2050-06-01T00:00:00Z'), reason: 1 }],
    });
    const { text, err } = opensslCrl(pki, crl);
    expect(err).toContain('verify OK');
    expect(text).toContain('Next Update: Jan  2 03:04:05 2051 GMT');
    expect(text).toContain('Revocation Date: Jun  1 00:00:00 2050 GMT');
    expect(Buffer.from(crl).includes(Buffer.from('20510102030405Z'))).toBe(true);
  });

  it('refuses invalid input', async () => {
    const pki = pkiFor('P-256');
    const base = {
      issuer: issuerOf(pki),
      crlNumber: 1n,
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + HOUR),
    };
    const entry = (e: Partial<CrlEntry>): CrlEntry[] => [{ serialNumber: unhex('01'), revokedAt, ...e }];
    await expect(buildCrl({ ...base, entries: entry({ reason: 7 }) })).rejects.toThrow(CrlError);
    await expect(buildCrl({ ...base, entries: entry({ reason: REVOCATION_REASONS.removeFromCRL }) })).rejects.toThrow(
      CrlError,
    );
    await expect(buildCrl({ ...base, entries: entry({ serialNumber: unhex('00') }) })).rejects.toThrow(CrlError);
    await expect(
      buildCrl({ ...base, entries: entry({ serialNumber: unhex('80' + '01'.repeat(19)) }) }),
    ).rejects.toThrow(CrlError);
    await expect(buildCrl({ ...base, crlNumber: -1n, entries: [] })).rejects.toThrow(CrlError);
    await expect(buildCrl({ ...base, crlNumber: 1n << 160n, entries: [] })).rejects.toThrow(CrlError);
    await expect(buildCrl({ ...base, nextUpdate: base.thisUpdate, entries: [] })).rejects.toThrow(CrlError);
    await expect(
      buildCrl({
        ...base,
        issuer: { certificate: pki.intermediate.der, signer: keyObjectSigner(pki.root.privateKey) },
        entries: [],
      }),
    ).rejects.toThrow(/not the key/);
  });

  it('builds a 100,000-entry CRL from a generator, which openssl verifies', async () => {
    const pki = pkiFor('P-256');
    const n = 100_000;
    function* many(): Generator<CrlEntry> {
      const serial = new Uint8Array(16);
      for (let i = 0; i < n; i++) {
        serial[0] = 0x40;
        new DataView(serial.buffer).setUint32(12, i);
        yield {
          serialNumber: serial,
          revokedAt: new Date(revokedAt.getTime() + i * 1000),
          reason: i % 11 === 7 || i % 11 === 8 ? 0 : i % 11,
        };
      }
    }
    // How fast is bench:crl's question; here, that it is built at all and verifies.
    const crl = await buildCrl({
      issuer: issuerOf(pki),
      crlNumber: 3n,
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + HOUR),
      entries: many(),
    });
    const { text, err } = opensslCrl(pki, crl);
    expect(err).toContain('verify OK');
    expect(text.split('Serial Number: ').length - 1).toBe(n);
    expect(text).toContain(
      `Serial Number: 40000000000000000000000000${(n - 1).toString(16).toUpperCase().padStart(6, '0')}`,
    );
  });
});
