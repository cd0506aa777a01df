import { readFileSync } from 'node:fs';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DER_TRUE, octetString, oid, seq, tlv } from '../../src/ca/der.ts';
import {
  buildOcspResponse,
  type CertId,
  certIdMatchesIssuer,
  issuerHashes,
  makeCertId,
  MAX_OCSP_REQUEST_BYTES,
  ocspErrorResponse,
  OcspRequestError,
  type OcspSingleResponse,
  parseOcspRequest,
} from '../../src/ca/ocsp.ts';
import { buildOcspSignerCertificate } from '../../src/ca/ocsp-signer-cert.ts';
import { toPem } from '../../src/ca/pem.ts';
import { keyObjectSigner, type Signer } from '../../src/kms/signer.ts';
import { createTestPki, openssl, p256KeyPair, tempDir, type TestPki } from '../support/pki.ts';

const HOUR = 3_600_000;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.length % 2 ? `0${s}` : s, 'hex'));

let pki: TestPki;
let dir: ReturnType<typeof tempDir>;
let responderCert: Uint8Array;
let responderSigner: Signer;
const paths = { inter: '', chain: '', leaf: '', responder: '', responderKey: '' };

beforeAll(async () => {
  pki = await createTestPki({ intermediateKey: 'P-256' });
  dir = tempDir();
  paths.inter = dir.file('inter.pem', pki.intermediate.pem);
  paths.chain = dir.file('chain.pem', pki.chainPem);
  paths.leaf = dir.file('leaf.pem', pki.leaf.pem);
  const responderKey = p256KeyPair();
  responderSigner = keyObjectSigner(responderKey.privateKey);
  const now = Date.now();
  responderCert = await buildOcspSignerCertificate({
    issuer: { certificate: pki.intermediate.der, signer: keyObjectSigner(pki.intermediate.privateKey) },
    subjectPublicKeyInfo: responderKey.spki,
    serial: unhex('5eed0001'),
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 24 * HOUR),
    commonName: 'Keyward Test OCSP Responder',
  });
  paths.responder = dir.file('responder.pem', toPem(responderCert));
  paths.responderKey = dir.file(
    'responder.key',
    responderKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  );
});

afterAll(() => dir?.cleanup());

/** Has openssl write a request; `extra` goes before the serials so digest options apply to them. */
function opensslRequest(name: string, serials: string[], extra: string[] = []): Uint8Array {
  const out = dir.file(name);
  const args = ['ocsp', ...extra, '-issuer', paths.inter];
  for (const s of serials) args.push('-serial', `0x${s}`);
  const r = openssl([...args, '-reqout', out]);
  expect(r.status, r.stderr).toBe(0);
  return new Uint8Array(readFileSync(out));
}

function window(): { thisUpdate: Date; nextUpdate: Date } {
  const now = Date.now();
  return { thisUpdate: new Date(now - 60_000), nextUpdate: new Date(now + 4 * HOUR) };
}

async function respond(responses: OcspSingleResponse[], nonce?: Uint8Array, byKeyHash?: boolean): Promise<Uint8Array> {
  return buildOcspResponse({
    responder: {
      certificate: responderCert,
      signer: responderSigner,
      ...(byKeyHash === undefined ? {} : { byKeyHash }),
    },
    producedAt: new Date(),
    responses,
    ...(nonce === undefined ? {} : { nonce }),
  });
}

/** Looks the serials up in a response with `openssl ocsp -respin`, verifying its signature too. */
function opensslCheck(
  resp: Uint8Array,
  serials: string[],
  opts: { digest?: string[]; trust?: string[] } = {},
): { out: string; err: string; status: number | null } {
  const file = dir.file(`resp-${Math.random().toString(36).slice(2)}.der`, resp);
  const args = ['ocsp', '-respin', file, ...(opts.digest ?? []), '-issuer', paths.inter, '-no_nonce'];
  for (const s of serials) args.push('-serial', `0x${s}`);
  args.push(...(opts.trust ?? ['-CAfile', paths.chain]), '-resp_text');
  const r = openssl(args);
  return { out: r.stdout, err: r.stderr, status: r.status };
}

describe('parseOcspRequest', () => {
  it('reads a SHA-1 request from openssl and matches it to the issuer', () => {
    const der = opensslRequest('sha1.der', [pki.leaf.serialHex], ['-no_nonce']);
    const req = parseOcspRequest(der);
    expect(req.nonce).toBeUndefined();
    expect(req.certIds).toHaveLength(1);
    const id = req.certIds[0]!;
    expect(id.hashAlgorithm).toBe('sha1');
    expect(hex(id.serialNumber)).toBe(pki.leaf.serialHex.padStart(hex(id.serialNumber).length, '0'));
    expect(certIdMatchesIssuer(id, issuerHashes(pki.intermediate.der))).toBe(true);
    expect(Buffer.from(der).includes(Buffer.from(id.raw))).toBe(true);

    // Hashes agree with openssl's own rendering of the request.
    const text = openssl(['ocsp', '-reqin', dir.file('sha1.der'), '-req_text']).stdout;
    expect(text).toContain(`Issuer Name Hash: ${hex(id.issuerNameHash).toUpperCase()}`);
    expect(text).toContain(`Issuer Key Hash: ${hex(id.issuerKeyHash).toUpperCase()}`);
  });

  it('reads a SHA-256 request with a nonce', () => {
    const der = opensslRequest('sha256.der', [pki.leaf.serialHex], ['-sha256', '-nonce']);
    const req = parseOcspRequest(der);
    const id = req.certIds[0]!;
    expect(id.hashAlgorithm).toBe('sha256');
    expect(id.issuerNameHash).toHaveLength(32);
    expect(certIdMatchesIssuer(id, issuerHashes(pki.intermediate.der))).toBe(true);
    expect(req.nonce).toBeDefined();
    const text = openssl(['ocsp', '-reqin', dir.file('sha256.der'), '-req_text']).stdout;
    expect(text.replace(/\s+/g, '')).toContain(
      `OCSPNonce:04${req.nonce!.length.toString(16).padStart(2, '0')}${hex(req.nonce!).toUpperCase()}`,
    );
  });

  it('reads several CertIDs, including a serial with the top bit set', () => {
    const serials = [pki.leaf.serialHex, '80ff01', '1'];
    const req = parseOcspRequest(opensslRequest('multi.der', serials, ['-no_nonce']));
    expect(req.certIds.map((c) => hex(c.serialNumber))).toEqual([pki.leaf.serialHex, '80ff01', '01']);
  });

  it('ignores requestorName and the signature of a signed request', () => {
    const der = opensslRequest(
      'signed.der',
      [pki.leaf.serialHex],
      ['-signer', paths.responder, '-signkey', paths.responderKey],
    );
    const req = parseOcspRequest(der);
    expect(req.certIds).toHaveLength(1);
    expect(req.nonce).toBeDefined();
  });

  it('refuses garbage, truncation, trailing bytes and oversize input', () => {
    const good = opensslRequest('good.der', [pki.leaf.serialHex], ['-no_nonce']);
    const cases: Uint8Array[] = [
      new Uint8Array(0),
      new TextEncoder().encode('GET / HTTP/1.1\r\n'),
      good.subarray(0, good.length - 3),
      Uint8Array.from([...good, 0]),
      new Uint8Array(MAX_OCSP_REQUEST_BYTES + 1),
      seq(seq(seq())), // empty requestList
      Uint8Array.of(0x30, 0x80, 0, 0), // indefinite length
    ];
    for (const c of cases) expect(() => parseOcspRequest(c)).toThrow(OcspRequestError);
  });

  it('refuses an unsupported CertID hash', () => {
    const der = opensslRequest('sha384.der', [pki.leaf.serialHex], ['-sha384', '-no_nonce']);
    expect(() => parseOcspRequest(der)).toThrow(/unsupported CertID hash/);
  });

  describe('nonce and extension rules', () => {
    const certIdDer = (): Uint8Array => makeCertId(issuerHashes(pki.intermediate.der), 'sha1', unhex('1234')).raw;
    const request = (...exts: Uint8Array[]): Uint8Array =>
      seq(seq(seq(seq(certIdDer())), ...(exts.length ? [tlv(0xa2, seq(...exts))] : [])));
    const nonceExt = (n: Uint8Array): Uint8Array => seq(oid('1.3.6.1.5.5.7.48.1.2'), octetString(octetString(n)));

    it('accepts 1..32 octets and refuses 0 or 33 (RFC 8954)', () => {
      expect(parseOcspRequest(request(nonceExt(new Uint8Array(1).fill(7)))).nonce).toEqual(Uint8Array.of(7));
      expect(parseOcspRequest(request(nonceExt(new Uint8Array(32).fill(9)))).nonce).toHaveLength(32);
      expect(() => parseOcspRequest(request(nonceExt(new Uint8Array(0))))).toThrow(OcspRequestError);
      expect(() => parseOcspRequest(request(nonceExt(new Uint8Array(33))))).toThrow(OcspRequestError);
    });

    it('refuses a nonce that is not an OCTET STRING, and a repeated nonce', () => {
      const raw = seq(oid('1.3.6.1.5.5.7.48.1.2'), octetString(Uint8Array.of(1, 2, 3, 4)));
      expect(() => parseOcspRequest(request(raw))).toThrow(OcspRequestError);
      const n = nonceExt(Uint8Array.of(1));
      expect(() => parseOcspRequest(request(n, n))).toThrow(OcspRequestError);
    });

    it('ignores unknown non-critical extensions but refuses unknown critical ones', () => {
      const unknown = (critical: boolean): Uint8Array =>
        seq(oid('1.3.6.1.5.5.7.48.1.4'), ...(critical ? [DER_TRUE] : []), octetString(seq()));
      expect(parseOcspRequest(request(unknown(false))).certIds).toHaveLength(1);
      expect(() => parseOcspRequest(request(unknown(true)))).toThrow(/critical/);
    });
  });
});

describe('buildOcspResponse', () => {
  it('answers good / revoked with reason / unknown for one multi-CertID request, verified by openssl', async () => {
    const serials = [pki.leaf.serialHex, 'abcdef01', '77'];
    const req = parseOcspRequest(opensslRequest('three.der', serials, ['-no_nonce']));
    const w = window();
    const revokedAt = new Date(Math.floor((Date.now() - 2 * HOUR) / 1000) * 1000);
    const [a, b, c] = req.certIds as [CertId, CertId, CertId];
    const resp = await respond([
      { certId: a, status: { kind: 'good' }, ...w },
      { certId: b, status: { kind: 'revoked', revokedAt, reason: 1 }, ...w },
      { certId: c, status: { kind: 'unknown' }, ...w },
    ]);
    const r = opensslCheck(resp, serials);
    expect(r.err).toContain('Response verify OK');
    expect(r.status).toBe(0);
    expect(r.out).toContain(`0x${pki.leaf.serialHex}: good`);
    expect(r.out).toMatch(/0xabcdef01: revoked[\s\S]*Reason: keyCompromise/);
    expect(r.out).toContain('0x77: unknown');
    expect(r.out).toContain('Revocation Reason: keyCompromise (0x1)');
    // ResponderID byKey: the SHA-1 of the responder key, which equals the SKI we wrote.
    const ski = openssl(['x509', '-in', paths.responder, '-noout', '-ext', 'subjectKeyIdentifier']).stdout;
    expect(r.out).toContain(`Responder Id: ${ski.split('\n')[1]!.trim().replace(/:/g, '')}`);
  });

  it('echoes the nonce, which openssl checks against its request', async () => {
    const reqDer = opensslRequest('nonce.der', [pki.leaf.serialHex], ['-nonce']);
    const req = parseOcspRequest(reqDer);
    const resp = await respond([{ certId: req.certIds[0]!, status: { kind: 'good' }, ...window() }], req.nonce);
    const respFile = dir.file('nonce-resp.der', resp);
    const r = openssl([
      'ocsp',
      '-reqin',
      dir.file('nonce.der'),
      '-respin',
      respFile,
      '-CAfile',
      paths.chain,
      '-resp_text',
    ]);
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stderr).not.toMatch(/nonce/i);
    expect(r.status).toBe(0);
    expect(r.stdout.replace(/\s+/g, '')).toContain(`OCSPNonce:0410${hex(req.nonce!).toUpperCase()}`);

    // A response to some other request's nonce must fail openssl's check.
    const other = await respond(
      [{ certId: req.certIds[0]!, status: { kind: 'good' }, ...window() }],
      new Uint8Array(16).fill(1),
    );
    const bad = openssl([
      'ocsp',
      '-reqin',
      dir.file('nonce.der'),
      '-respin',
      dir.file('other.der', other),
      '-CAfile',
      paths.chain,
    ]);
    expect(bad.stderr).toContain('Nonce Verify error');
  });

  it('answers a SHA-256 CertID with that same CertID', async () => {
    const req = parseOcspRequest(opensslRequest('s256.der', [pki.leaf.serialHex], ['-sha256', '-no_nonce']));
    const resp = await respond([
      {
        certId: req.certIds[0]!,
        status: { kind: 'revoked', revokedAt: new Date(Date.now() - HOUR), reason: 4 },
        ...window(),
      },
    ]);
    expect(Buffer.from(resp).includes(Buffer.from(req.certIds[0]!.raw))).toBe(true);
    const r = opensslCheck(resp, [pki.leaf.serialHex], { digest: ['-sha256'] });
    expect(r.err).toContain('Response verify OK');
    expect(r.out).toContain('Hash Algorithm: sha256');
    expect(r.out).toMatch(new RegExp(`0x${pki.leaf.serialHex}: revoked[\\s\\S]*Reason: superseded`));
  });

  it('pre-signs per certificate with CA-built CertIDs (SHA-1 and SHA-256), trusted through -VAfile', async () => {
    const hashes = issuerHashes(pki.intermediate.der);
    for (const [alg, digest] of [
      ['sha1', []],
      ['sha256', ['-sha256']],
    ] as const) {
      const certId = makeCertId(hashes, alg, unhex(pki.leaf.serialHex));
      const resp = await respond([{ certId, status: { kind: 'good' }, ...window() }]);
      const r = opensslCheck(resp, [pki.leaf.serialHex], { digest: [...digest], trust: ['-VAfile', paths.responder] });
      expect(r.err).toContain('Response verify OK');
      expect(r.out).toContain(`0x${pki.leaf.serialHex}: good`);
      expect(r.out).not.toContain('Response Extensions');
      // The CA-built CertID is byte-identical to the one openssl sends.
      const sent = parseOcspRequest(opensslRequest(`pre-${alg}.der`, [pki.leaf.serialHex], [...digest, '-no_nonce']))
        .certIds[0]!;
      expect(hex(certId.raw)).toBe(hex(sent.raw));
    }
  });

  it('can name the responder byName, and can be signed by the issuing CA itself', async () => {
    const certId = makeCertId(issuerHashes(pki.intermediate.der), 'sha1', unhex(pki.leaf.serialHex));
    const byName = await respond([{ certId, status: { kind: 'good' }, ...window() }], undefined, false);
    const r1 = opensslCheck(byName, [pki.leaf.serialHex]);
    expect(r1.err).toContain('Response verify OK');
    expect(r1.out).toContain('Responder Id: CN = Keyward Test OCSP Responder');

    const direct = await buildOcspResponse({
      responder: { certificate: pki.intermediate.der, signer: keyObjectSigner(pki.intermediate.privateKey) },
      producedAt: new Date(),
      responses: [{ certId, status: { kind: 'good' }, ...window() }],
    });
    const r2 = opensslCheck(direct, [pki.leaf.serialHex]);
    expect(r2.err).toContain('Response verify OK');
    expect(r2.out).toContain(`0x${pki.leaf.serialHex}: good`);
  });

  it('works with an RSA responder certificate', async () => {
    const rsaPki = await createTestPki({ intermediateKey: 'RSA-2048' });
    const inter = dir.file('rsa-inter.pem', rsaPki.intermediate.pem);
    const chain = dir.file('rsa-chain.pem', rsaPki.chainPem);
    const certId = makeCertId(issuerHashes(rsaPki.intermediate.der), 'sha1', unhex(rsaPki.leaf.serialHex));
    const resp = await buildOcspResponse({
      responder: { certificate: rsaPki.intermediate.der, signer: keyObjectSigner(rsaPki.intermediate.privateKey) },
      producedAt: new Date(),
      responses: [{ certId, status: { kind: 'revoked', revokedAt: new Date(Date.now() - HOUR) }, ...window() }],
    });
    const r = openssl([
      'ocsp',
      '-respin',
      dir.file('rsa-resp.der', resp),
      '-issuer',
      inter,
      '-no_nonce',
      '-serial',
      `0x${rsaPki.leaf.serialHex}`,
      '-CAfile',
      chain,
      '-resp_text',
    ]);
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(r.stdout).toContain(`0x${rsaPki.leaf.serialHex}: revoked`);
    // No reason given: no reason encoded.
    expect(r.stdout).not.toContain('Revocation Reason');
  });

  it('refuses a signer whose key is not the responder certificate key, and bad inputs', async () => {
    const certId = makeCertId(issuerHashes(pki.intermediate.der), 'sha1', unhex('01'));
    const w = window();
    await expect(
      buildOcspResponse({
        responder: { certificate: responderCert, signer: keyObjectSigner(pki.intermediate.privateKey) },
        producedAt: new Date(),
        responses: [{ certId, status: { kind: 'good' }, ...w }],
      }),
    ).rejects.toThrow(/not the key/);
    await expect(respond([])).rejects.toThrow();
    await expect(
      respond([{ certId, status: { kind: 'revoked', revokedAt: new Date(), reason: 7 }, ...w }]),
    ).rejects.toThrow(/reason/);
    await expect(
      respond([{ certId, status: { kind: 'good' }, thisUpdate: w.nextUpdate, nextUpdate: w.thisUpdate }]),
    ).rejects.toThrow();
    await expect(respond([{ certId, status: { kind: 'good' }, ...w }], new Uint8Array(33))).rejects.toThrow(/nonce/);
  });
});

describe('buildOcspSignerCertificate', () => {
  it('issues a delegated responder certificate openssl accepts for OCSP signing', () => {
    const v = openssl(['verify', '-CAfile', paths.chain, '-purpose', 'ocsphelper', paths.responder]);
    expect(v.stdout).toContain(': OK');
    const text = openssl(['x509', '-in', paths.responder, '-noout', '-text']).stdout;
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/Extended Key Usage:\s*\n\s+OCSP Signing/);
    expect(text).toContain('OCSP No Check');
    expect(text).toContain('Subject Key Identifier');
    const interSki = openssl(['x509', '-in', paths.inter, '-noout', '-ext', 'subjectKeyIdentifier'])
      .stdout.split('\n')[1]!
      .trim();
    expect(text).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${interSki}`));
    const issuer = openssl(['x509', '-in', paths.responder, '-noout', '-issuer', '-nameopt', 'RFC2253']).stdout;
    const interSubject = openssl(['x509', '-in', paths.inter, '-noout', '-subject', '-nameopt', 'RFC2253']).stdout;
    expect(issuer.replace(/^issuer=/, '')).toBe(interSubject.replace(/^subject=/, ''));
  });
});

describe('ocspErrorResponse', () => {
  it.each([
    ['malformedRequest', 'malformedrequest (1)'],
    ['internalError', 'internalerror (2)'],
    ['tryLater', 'trylater (3)'],
    ['sigRequired', 'sigrequired (5)'],
    ['unauthorized', 'unauthorized (6)'],
  ] as const)('%s parses in openssl', (status, printed) => {
    const r = openssl([
      'ocsp',
      '-respin',
      dir.file(`err-${status}.der`, ocspErrorResponse(status)),
      '-resp_text',
      '-noverify',
    ]);
    expect(r.stdout).toContain(`Responder Error: ${printed}`);
  });
});
