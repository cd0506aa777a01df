// The hot-path CSR reader (src/ca/csr.ts walks the DER itself) against a full library parse
// (pkijs): on every CSR the tests make with real tools, on generated CSRs and on mutations of
// both. Whatever our reader accepts, pkijs must accept too and read the same fields; on the
// corpus and the generated CSRs both must accept.
import { generateKeyPairSync, sign, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import acme from 'acme-client';
import * as asn1js from 'asn1js';
import fc from 'fast-check';
import * as pkijs from 'pkijs';
import { beforeAll, describe, expect, it } from 'vitest';

import { type CsrFields, readCsr } from '../../src/ca/csr.ts';
import { bitString, oid, seq, tlv } from '../../src/ca/der.ts';
import { OID } from '../../src/ca/oids.ts';
import { x509 } from '../../src/ca/x509.ts';
import { KeywardError } from '../../src/core/errors.ts';
import { formatIp, parseIp } from '../../src/core/ip.ts';
import { openssl, tempDir } from './helpers.ts';

interface Read {
  commonName: string | undefined;
  sans: CsrFields['sans'];
  spki: string;
  signatureOid: string;
  signature: string;
  version: number;
}

const hex = (b: ArrayBuffer | Uint8Array) =>
  Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex');

/**
 * Bound on one read, in CPU time (a loaded machine's preemption is not the reader's): the reader
 * walks each byte a few times, so even a 64 KiB input is far below. An input over it is read once
 * more, so a one-off pause (a major GC) is not taken for a slow input; a slow input is slow twice.
 */
const MAX_READ_MS = 250;

const cpuMs = (since: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
};

function readTimed(der: Uint8Array): { fields?: CsrFields; err?: unknown; ms: number } {
  const started = process.cpuUsage();
  try {
    return { fields: readCsr(der), ms: cpuMs(started) };
  } catch (err) {
    return { err, ms: cpuMs(started) };
  }
}

/** Our reader's fields, or undefined when it refuses; it may refuse only with a badCSR error. */
function ours(der: Uint8Array): Read | undefined {
  let read = readTimed(der);
  if (read.ms >= MAX_READ_MS) read = readTimed(der);
  expect(read.ms, `reading ${der.length} bytes`).toBeLessThan(MAX_READ_MS);
  if (read.err !== undefined) {
    if (!(read.err instanceof KeywardError && read.err.kind === 'badCSR')) throw read.err;
    return undefined;
  }
  const f = read.fields!;
  return {
    commonName: f.commonName,
    sans: f.sans,
    spki: hex(f.spki),
    signatureOid: f.signatureOid,
    signature: hex(f.signature),
    version: f.version.length === 1 ? f.version[0]! : -1,
  };
}

/** The same fields through pkijs (BER, schema-checked); undefined when pkijs refuses the input. */
function library(der: Uint8Array): Read | undefined {
  try {
    const req = pkijs.CertificationRequest.fromBER(new Uint8Array(der));
    const cns = req.subject.typesAndValues
      .filter((t) => t.type === OID.commonName)
      .map((t) => String((t.value.valueBlock as { value: string }).value));
    const sans: CsrFields['sans'] = { dns: [], ip: [], uri: [], email: [] };
    for (const attr of req.attributes ?? []) {
      if (attr.type !== OID.extensionRequest) continue;
      for (const value of attr.values) {
        for (const ext of new pkijs.Extensions({ schema: value }).extensions) {
          if (ext.extnID !== OID.subjectAltName) continue;
          const parsed = asn1js.fromBER(ext.extnValue.valueBlock.valueHexView);
          if (parsed.offset === -1) return undefined;
          for (const name of new pkijs.GeneralNames({ schema: parsed.result }).names) {
            if (name.type === 2) sans.dns.push(name.value as string);
            else if (name.type === 1) sans.email.push(name.value as string);
            else if (name.type === 6) sans.uri.push(name.value as string);
            else if (name.type === 7)
              sans.ip.push(formatIp(new Uint8Array((name.value as asn1js.OctetString).valueBlock.valueHexView)));
            else return { ...emptyRead(), commonName: `unsupported name type ${name.type}` };
          }
        }
      }
    }
    if (cns.length > 1) return { ...emptyRead(), commonName: 'several commonNames' };
    return {
      commonName: cns[0],
      sans,
      spki: hex(req.subjectPublicKeyInfo.toSchema().toBER()),
      signatureOid: req.signatureAlgorithm.algorithmId,
      signature: hex(req.signatureValue.valueBlock.valueHexView),
      version: req.version,
    };
  } catch {
    return undefined;
  }
}

const emptyRead = (): Read => ({
  commonName: undefined,
  sans: { dns: [], ip: [], uri: [], email: [] },
  spki: '',
  signatureOid: '',
  signature: '',
  version: -1,
});

/** Our acceptance implies pkijs's, with the same reading. */
function agreeOnAccepted(der: Uint8Array): void {
  const mine = ours(der);
  if (mine === undefined) return;
  expect(library(der), `pkijs refuses what we accepted: ${hex(der)}`).toEqual(mine);
}

// ---- the corpus: CSRs from the tools the other tests use ------------------------------------------
const corpus: { name: string; der: Uint8Array }[] = [];

function pemToDer(pem: string): Uint8Array {
  return new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64'));
}

beforeAll(async () => {
  const algs: [string, { name: string; namedCurve?: string; hash?: string }][] = [
    ['peculiar ecdsa-p256', { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }],
    ['peculiar ecdsa-p384', { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' }],
    ['peculiar ed25519', { name: 'Ed25519' }],
  ];
  for (const [name, alg] of algs) {
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=app.example.test, O=Example, C=DE',
      keys,
      signingAlgorithm: alg,
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'dns', value: 'app.example.test' },
          { type: 'ip', value: '2001:db8::1' },
          { type: 'ip', value: '192.0.2.7' },
          { type: 'url', value: 'spiffe://example.test/app' },
          { type: 'email', value: 'ops@example.test' },
        ]),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ],
    });
    corpus.push({ name, der: new Uint8Array(csr.rawData) });
  }
  const acmeCsrs: [string, acme.CsrOptions][] = [
    ['acme-client ecdsa', { commonName: 'cn.example.test', altNames: ['cn.example.test', 'b.example.test'] }],
    ['acme-client no CN', { altNames: ['only-san.example.test', '192.0.2.9'] }],
  ];
  for (const [name, args] of acmeCsrs) {
    const [, pem] = await acme.crypto.createCsr(args, await acme.crypto.createPrivateEcdsaKey());
    corpus.push({ name, der: pemToDer(pem.toString()) });
  }
  const dir = tempDir();
  const key = join(dir, 'key.pem');
  expect(openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]).status).toBe(0);
  for (const [name, extra] of [
    ['openssl with SANs', ['-addext', 'subjectAltName=DNS:o.example.test,IP:10.1.2.3,DNS:*.w.example.test']],
    ['openssl without extensions', []],
  ] as const) {
    const out = join(dir, `${corpus.length}.pem`);
    const r = openssl(['req', '-new', '-key', key, '-subj', '/CN=o.example.test/O=Org', '-out', out, ...extra]);
    expect(r.status, r.stderr).toBe(0);
    corpus.push({ name, der: pemToDer(readFileSync(out, 'utf8')) });
  }
});

// ---- generated CSRs -----------------------------------------------------------------------------
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const SPKI = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
const ECDSA_SHA256 = seq(oid(OID.ecdsaWithSha256));

type CnType = 'utf8' | 'printable' | 'bmp';
interface Spec {
  cn: { value: string; type: CnType } | null;
  otherRdns: string[];
  dns: string[];
  ips: string[];
  uris: string[];
  critical: boolean;
  extraExtension: boolean;
  challengePassword: boolean;
}

function cnValue(v: { value: string; type: CnType }): Uint8Array {
  if (v.type === 'bmp') return tlv(0x1e, Buffer.from(v.value, 'utf16le').swap16());
  return tlv(v.type === 'utf8' ? 0x0c : 0x13, Buffer.from(v.value, 'utf8'));
}

function buildCsr(s: Spec): Uint8Array {
  const rdns = [
    ...s.otherRdns.map((o) => tlv(0x31, seq(oid(OID.organizationName), tlv(0x0c, Buffer.from(o, 'utf8'))))),
    ...(s.cn ? [tlv(0x31, seq(oid(OID.commonName), cnValue(s.cn)))] : []),
  ];
  const names = [
    ...s.dns.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))),
    ...s.ips.map((ip) => tlv(0x87, parseIp(ip)!)),
    ...s.uris.map((u) => tlv(0x86, Buffer.from(u, 'ascii'))),
  ];
  const exts = [
    ...(names.length > 0
      ? [seq(oid(OID.subjectAltName), ...(s.critical ? [Uint8Array.of(1, 1, 0xff)] : []), tlv(4, seq(...names)))]
      : []),
    ...(s.extraExtension ? [seq(oid(OID.keyUsage), tlv(4, Uint8Array.of(3, 2, 7, 0x80)))] : []),
  ];
  const attrs = [
    ...(exts.length > 0 ? [seq(oid(OID.extensionRequest), tlv(0x31, seq(...exts)))] : []),
    ...(s.challengePassword ? [seq(oid('1.2.840.113549.1.9.7'), tlv(0x31, tlv(0x13, Buffer.from('secret'))))] : []),
  ];
  const info = seq(Uint8Array.of(2, 1, 0), seq(...rdns), SPKI, tlv(0xa0, ...attrs));
  return seq(info, ECDSA_SHA256, bitString(sign('sha256', info, privateKey)));
}

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);
const printable = fc.stringMatching(/^[A-Za-z0-9 '()+,./:=?-]{1,30}$/);
const spec: fc.Arbitrary<Spec> = fc.record({
  cn: fc.option(
    fc.oneof(
      fc.record({ value: printable, type: fc.constant<CnType>('printable') }),
      fc.record({
        value: fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }),
        type: fc.constant<CnType>('utf8'),
      }),
      fc.record({ value: fc.string({ minLength: 1, maxLength: 20 }), type: fc.constant<CnType>('bmp') }),
    ),
  ),
  otherRdns: fc.array(printable, { maxLength: 2 }),
  dns: fc.array(
    fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.')),
    { maxLength: 4 },
  ),
  ips: fc.array(fc.oneof(fc.ipV4(), fc.ipV6()), { maxLength: 3 }),
  uris: fc.array(
    label.map((l) => `spiffe://example.test/${l}`),
    { maxLength: 2 },
  ),
  critical: fc.boolean(),
  extraExtension: fc.boolean(),
  challengePassword: fc.boolean(),
});

const lone = (s: string) => /[\uD800-\uDFFF]/.test(s);

// ---- mutations ----------------------------------------------------------------------------------
type Edit = { kind: 'set' | 'insert' | 'delete'; at: number; byte: number } | { kind: 'truncate'; at: number };
const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({
    kind: fc.constantFrom('set' as const, 'insert' as const, 'delete' as const),
    at: fc.nat(),
    byte: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function mutate(der: Uint8Array, edits: Edit[]): Uint8Array {
  let b = Array.from(der);
  for (const e of edits) {
    const at = b.length === 0 ? 0 : e.at % b.length;
    if (e.kind === 'set') b[at] = e.byte;
    else if (e.kind === 'insert') b.splice(at, 0, e.byte);
    else if (e.kind === 'delete') b.splice(at, 1);
    else b = b.slice(0, at);
  }
  return Uint8Array.from(b);
}

describe('hot-path CSR reader vs pkijs', () => {
  it('reads every CSR of the corpus as pkijs does', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(7);
    for (const { name, der } of corpus) {
      const mine = ours(der);
      expect(mine, `${name} refused`).toBeDefined();
      expect(library(der), name).toEqual(mine);
    }
    const withSans = ours(corpus[0]!.der)!;
    expect(withSans.commonName).toBe('app.example.test');
    expect(withSans.sans.ip).toEqual(['2001:db8::1', '192.0.2.7']);
  });

  it('reads generated CSRs as pkijs does', () => {
    fc.assert(
      fc.property(spec, (s) => {
        fc.pre(!(s.cn && lone(s.cn.value)));
        const der = buildCsr(s);
        const mine = ours(der);
        expect(mine).toBeDefined();
        expect(library(der)).toEqual(mine);
        expect(mine!.commonName).toBe(s.cn?.value);
        expect(mine!.sans.dns).toEqual(s.dns);
      }),
      { numRuns: 300 },
    );
  });

  const fuzzRuns = Number(process.env.CSR_FUZZ_RUNS ?? 2000);
  // About 0.2 ms a run on a quiet machine; CI may share the machine, so the bound is generous.
  const fuzzTimeoutMs = Math.max(60_000, fuzzRuns * 6);

  it('accepts nothing that pkijs refuses or reads differently, under mutation', { timeout: fuzzTimeoutMs }, () => {
    fc.assert(
      fc.property(
        fc.oneof(
          spec.filter((s) => !(s.cn && lone(s.cn.value))).map(buildCsr),
          fc.integer({ min: 0, max: 1000 }).map((i) => corpus[i % corpus.length]!.der),
        ),
        fc.array(edit, { minLength: 1, maxLength: 3 }),
        (der, edits) => agreeOnAccepted(mutate(der, edits)),
      ),
      // 2,000 in every suite run; `npm run test:fuzz` (once per CI run) asks for 100,000.
      { numRuns: fuzzRuns },
    );
  });

  it('refuses what the library refuses among hand-made malformations', () => {
    const good = buildCsr({
      cn: { value: 'x.example.test', type: 'utf8' },
      otherRdns: [],
      dns: ['x.example.test'],
      ips: [],
      uris: [],
      critical: false,
      extraExtension: false,
      challengePassword: false,
    });
    const cases: Uint8Array[] = [
      good.subarray(0, good.length - 1),
      Uint8Array.from([...good, 0]),
      Uint8Array.from([0x31, ...good.subarray(1)]),
      new Uint8Array(0),
    ];
    for (const der of cases) {
      expect(ours(der)).toBeUndefined();
      agreeOnAccepted(der);
    }
  });
});
