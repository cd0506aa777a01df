import { randomBytes } from 'node:crypto';

import { beforeAll, describe, expect, it } from 'vitest';

import { buildSelfSignedCa, buildSubordinateCa } from '../../src/ca/ca-builder.ts';
import { CertBuildError } from '../../src/ca/cert-build-error.ts';
import { children, rawOf, readWhole } from '../../src/ca/der.ts';
import { type IssuerInfo, parseIssuerCertificate } from '../../src/ca/issuer-certificate.ts';
import { createLeafBuilder, type LeafSpec } from '../../src/ca/leaf-builder.ts';
import { OID } from '../../src/ca/oids.ts';
import { serialNumberContent } from '../../src/ca/tbs-certificate.ts';
import { x509 } from '../../src/ca/x509.ts';
import { formatIp, parseIp } from '../../src/core/ip.ts';
import {
  type IssuerKey,
  issuerKey,
  type IssuerKeyType,
  openssl,
  type SubjectKeyType,
  subjectSpki,
  tempDir,
  writePem,
} from './helpers.ts';

const PROFILES = {
  'tls-server': [OID.serverAuth],
  mtls: [OID.serverAuth, OID.clientAuth],
} as const;

const ISSUER_TYPES: IssuerKeyType[] = ['P-256', 'P-384', 'RSA-3072'];
const SUBJECT_TYPES: SubjectKeyType[] = ['P-256', 'P-384', 'RSA-2048', 'Ed25519'];

const second = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);
const NOW = Date.now();
const hex = (b: ArrayBuffer | Uint8Array): string =>
  Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex');

interface Hierarchy {
  key: IssuerKey;
  root: Uint8Array;
  intermediate: Uint8Array;
  issuer: IssuerInfo;
  dir: string;
}

async function hierarchy(type: IssuerKeyType): Promise<Hierarchy> {
  const rootKey = await issuerKey(type);
  const key = await issuerKey(type);
  const root = await buildSelfSignedCa(
    {
      serial: randomBytes(16),
      notBefore: second(NOW - 3600_000),
      notAfter: second(NOW + 10 * 365 * 86400_000),
      subject: { commonName: `Keyward Test Root ${type}`, organization: 'Keyward Tests' },
      subjectPublicKeyInfo: rootKey.spki,
      pathLength: 1,
    },
    rootKey.signer,
  );
  const intermediate = await buildSubordinateCa(
    {
      serial: randomBytes(16),
      notBefore: second(NOW - 3600_000),
      notAfter: second(NOW + 5 * 365 * 86400_000),
      subject: { commonName: `Keyward Test Issuing CA ${type}`, organization: 'Keyward Tests' },
      subjectPublicKeyInfo: key.spki,
      pathLength: 0,
      nameConstraints: { permittedDns: ['example.test', 'svc.internal'], permittedIp: ['10.0.0.0/8', 'fd00::/8'] },
    },
    { certificate: root, signer: rootKey.signer },
  );
  const dir = tempDir();
  writePem(dir, 'root.pem', root);
  writePem(dir, 'inter.pem', intermediate);
  return { key, root, intermediate, issuer: { certificate: intermediate, signer: key.signer }, dir };
}

function leafSpec(subject: SubjectKeyType, ekus: readonly string[], withCn: boolean): LeafSpec {
  const serial = randomBytes(16);
  serial[0]! |= 0x80; // exercise the sign-octet padding
  return {
    serial,
    notBefore: second(NOW - 60_000),
    notAfter: second(NOW + 86400_000),
    subjectPublicKeyInfo: subjectSpki(subject),
    ...(withCn ? { commonName: 'api.example.test' } : {}),
    sans: {
      dns: ['api.example.test', '*.svc.internal'],
      ip: ['10.1.2.3', 'fd00::1:2'],
      uri: ['spiffe://example.test/ns/default/sa/api'],
      email: [],
    },
    extKeyUsages: [...ekus],
    keyEncipherment: subject === 'RSA-2048',
    crlDistributionPoint: 'http://ca.example.test/crl/1.crl',
    ocspUrl: 'http://ca.example.test/ocsp',
    caIssuersUrl: 'http://ca.example.test/issuer.cer',
  };
}

/** The same leaf through @peculiar/x509, with extensions in the order our builder writes them. */
async function referenceLeaf(h: Hierarchy, spec: LeafSpec): Promise<x509.X509Certificate> {
  const inter = new x509.X509Certificate(new Uint8Array(h.intermediate));
  const aki = inter.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
  const subjectKey = new x509.PublicKey(new Uint8Array(spec.subjectPublicKeyInfo));
  const ski = await x509.SubjectKeyIdentifierExtension.create(subjectKey);
  const ku = x509.KeyUsageFlags.digitalSignature | (spec.keyEncipherment ? x509.KeyUsageFlags.keyEncipherment : 0);
  const sans: x509.JsonGeneralName[] = [
    ...spec.sans.dns.map((value) => ({ type: 'dns' as const, value })),
    ...spec.sans.ip.map((value) => ({ type: 'ip' as const, value })),
    ...spec.sans.uri.map((value) => ({ type: 'url' as const, value })),
    ...spec.sans.email.map((value) => ({ type: 'email' as const, value })),
  ];
  return x509.X509CertificateGenerator.create({
    serialNumber: hex(serialNumberContent(spec.serial)),
    // RFC 5280 4.1.2.6: new names SHOULD be UTF8String; @peculiar/x509 prefers PrintableString unless told.
    subject: spec.commonName === undefined ? [] : new x509.Name([{ CN: [{ utf8String: spec.commonName }] }]),
    issuer: inter.subjectName,
    notBefore: spec.notBefore,
    notAfter: spec.notAfter,
    publicKey: subjectKey,
    signingKey: h.key.pair.privateKey,
    signingAlgorithm: h.key.signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(ku, true),
      new x509.ExtendedKeyUsageExtension(spec.extKeyUsages, false),
      ski,
      new x509.AuthorityKeyIdentifierExtension(aki, false),
      new x509.SubjectAlternativeNameExtension(sans, spec.commonName === undefined),
      new x509.CRLDistributionPointsExtension([spec.crlDistributionPoint!]),
      new x509.AuthorityInfoAccessExtension({ ocsp: [spec.ocspUrl!], caIssuers: [spec.caIssuersUrl!] }),
    ],
  });
}

function describeCert(c: x509.X509Certificate) {
  return {
    serial: c.serialNumber,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    issuer: c.issuer,
    issuerDer: hex(c.issuerName.toArrayBuffer()),
    subject: c.subject,
    subjectDer: hex(c.subjectName.toArrayBuffer()),
    spki: hex(c.publicKey.rawData),
    signatureAlgorithm: c.signatureAlgorithm,
    extensions: c.extensions.map((e) => ({ type: e.type, critical: e.critical, value: hex(e.value) })),
  };
}

function tbsOf(cert: Uint8Array): Uint8Array {
  const [tbs] = children(cert, readWhole(cert));
  return rawOf(cert, tbs!);
}

const hierarchies = new Map<IssuerKeyType, Hierarchy>();

beforeAll(async () => {
  for (const t of ISSUER_TYPES) hierarchies.set(t, await hierarchy(t));
});

describe('CA certificates', () => {
  it.each(ISSUER_TYPES)('root and intermediate (%s) verify with openssl -x509_strict', (type) => {
    const h = hierarchies.get(type)!;
    const r = openssl(['verify', '-x509_strict', '-CAfile', `${h.dir}/root.pem`, `${h.dir}/inter.pem`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(': OK');
    const text = openssl(['x509', '-noout', '-text', '-in', `${h.dir}/inter.pem`]).stdout;
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(text).toMatch(
      /Name Constraints: critical\s+Permitted:\s+DNS:example.test\s+DNS:svc.internal\s+IP:10.0.0.0\/255.0.0.0/,
    );
    expect(text).toContain('X509v3 Authority Key Identifier');
  });

  it('reads the issuer facts back', () => {
    const h = hierarchies.get('P-256')!;
    const parsed = parseIssuerCertificate(h.intermediate);
    const ref = new x509.X509Certificate(new Uint8Array(h.intermediate));
    expect(parsed.isCa).toBe(true);
    expect(parsed.pathLength).toBe(0);
    expect(hex(parsed.subject)).toBe(hex(ref.subjectName.toArrayBuffer()));
    expect(hex(parsed.keyIdentifier)).toBe(ref.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
    expect(parsed.notAfter.getTime()).toBe(ref.notAfter.getTime());
  });

  it('refuses a subordinate CA beyond the issuer path length', async () => {
    const h = hierarchies.get('P-256')!;
    const other = await issuerKey('P-256');
    await expect(
      buildSubordinateCa(
        {
          serial: randomBytes(16),
          notBefore: second(NOW),
          notAfter: second(NOW + 86400_000),
          subject: { commonName: 'too deep' },
          subjectPublicKeyInfo: other.spki,
        },
        h.issuer,
      ),
    ).rejects.toThrow(/path length/);
  });

  it('refuses a self-signed CA signed by another key', async () => {
    const a = await issuerKey('P-256');
    const b = await issuerKey('P-256');
    await expect(
      buildSelfSignedCa(
        {
          serial: randomBytes(16),
          notBefore: second(NOW),
          notAfter: second(NOW + 1e9),
          subject: { commonName: 'x' },
          subjectPublicKeyInfo: a.spki,
        },
        b.signer,
      ),
    ).rejects.toThrow(CertBuildError);
  });
});

describe('leaf certificates match @peculiar/x509 field for field', () => {
  const cases = ISSUER_TYPES.flatMap((issuer) =>
    Object.entries(PROFILES).flatMap(([profile, ekus]) =>
      SUBJECT_TYPES.map((subject) => ({ issuer, profile, ekus, subject })),
    ),
  );

  it.each(cases)('$issuer issuer, $profile, $subject subject', async ({ issuer, profile, ekus, subject }) => {
    const h = hierarchies.get(issuer)!;
    // Cover the empty-subject (critical SAN) form on the mtls profile.
    const spec = leafSpec(subject, ekus, profile === 'tls-server');
    const builder = createLeafBuilder(h.issuer);
    const ours = await builder.build(spec);
    const theirs = await referenceLeaf(h, spec);

    const oursCert = new x509.X509Certificate(new Uint8Array(ours));
    expect(describeCert(oursCert)).toEqual(describeCert(theirs));
    // Same inputs, same DER: the to-be-signed parts agree byte for byte.
    expect(hex(tbsOf(ours))).toBe(hex(tbsOf(new Uint8Array(theirs.rawData))));
    expect(hex(builder.tbs(spec))).toBe(hex(tbsOf(ours)));
    expect(await oursCert.verify({ publicKey: h.key.pair.publicKey, signatureOnly: true })).toBe(true);

    const dir = h.dir;
    const name = `${profile}-${subject}`;
    const oursPath = writePem(dir, `${name}-ours.pem`, ours);
    const theirsPath = writePem(dir, `${name}-theirs.pem`, new Uint8Array(theirs.rawData));
    const purpose = profile === 'mtls' ? 'sslclient' : 'sslserver';
    const v = openssl([
      'verify',
      '-x509_strict',
      '-purpose',
      purpose,
      '-CAfile',
      `${dir}/root.pem`,
      '-untrusted',
      `${dir}/inter.pem`,
      oursPath,
      theirsPath,
    ]);
    expect(v.stderr).toBe('');
    expect(v.stdout).toBe(`${oursPath}: OK\n${theirsPath}: OK\n`);

    const text = openssl(['x509', '-noout', '-text', '-in', oursPath]);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text.stdout).toContain(
      `X509v3 Subject Alternative Name: ${spec.commonName === undefined ? 'critical' : ''}`,
    );
    expect(text.stdout).toContain(
      'DNS:api.example.test, DNS:*.svc.internal, IP Address:10.1.2.3, IP Address:FD00:0:0:0:0:0:1:2, URI:spiffe://example.test/ns/default/sa/api',
    );
    expect(text.stdout).toContain('OCSP - URI:http://ca.example.test/ocsp');
    expect(text.stdout).toContain(
      spec.keyEncipherment
        ? 'Digital Signature, Key Encipherment'
        : 'Key Usage: critical\n                Digital Signature\n',
    );
  });
});

describe('leaf hard limits', () => {
  const base = (): LeafSpec => leafSpec('P-256', PROFILES['tls-server'], true);
  const builder = () => createLeafBuilder(hierarchies.get('P-256')!.issuer);

  it('encodes serials as positive minimal INTEGERs with the caller value', () => {
    expect(hex(serialNumberContent(Uint8Array.of(0x80, 1)))).toBe('008001');
    expect(hex(serialNumberContent(Uint8Array.of(0, 0, 0x7f)))).toBe('7f');
    expect(hex(serialNumberContent(Uint8Array.of(0, 0x80)))).toBe('0080');
    expect(() => serialNumberContent(Uint8Array.of(0, 0))).toThrow(/positive/);
    expect(() => serialNumberContent(new Uint8Array(21).fill(1))).toThrow(/20 octets/);
  });

  it.each([
    [
      'no names',
      { commonName: undefined, sans: { dns: [], ip: [], uri: [], email: [] } },
      /commonName or at least one/,
    ],
    ['inverted validity', { notAfter: new Date(NOW - 120_000) }, /notBefore/],
    ['outliving the issuer', { notAfter: new Date(NOW + 20 * 365 * 86400_000) }, /outlive/],
    ['keyEncipherment on EC', { keyEncipherment: true }, /RSA/],
    ['bad DNS name', { sans: { dns: ['bad name.test'], ip: [], uri: [], email: [] } }, /invalid DNS name/],
    ['non-ASCII DNS name', { sans: { dns: ['bücher.test'], ip: [], uri: [], email: [] } }, /invalid DNS name/],
    ['bad IP', { sans: { dns: [], ip: ['10.0.0.256'], uri: [], email: [] } }, /invalid IP/],
    ['long CN', { commonName: 'a'.repeat(65) }, /commonName/],
    ['bad EKU', { extKeyUsages: ['not-an-oid'] }, /extended key usage/],
    ['RSA-1024 key', { subjectPublicKeyInfo: 'rsa1024' }, /too small/],
    ['garbage key', { subjectPublicKeyInfo: 'garbage' }, /malformed/],
  ] as const)('refuses %s', async (_, patch, message) => {
    const spec: LeafSpec = { ...base(), ...(patch as Partial<LeafSpec>) };
    if ((patch as { subjectPublicKeyInfo?: string }).subjectPublicKeyInfo === 'rsa1024') {
      const { generateKeyPairSync } = await import('node:crypto');
      spec.subjectPublicKeyInfo = new Uint8Array(
        generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'der' }),
      );
    } else if ((patch as { subjectPublicKeyInfo?: string }).subjectPublicKeyInfo === 'garbage') {
      spec.subjectPublicKeyInfo = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00);
    }
    if ('commonName' in patch && patch.commonName === undefined) delete spec.commonName;
    await expect(builder().build(spec)).rejects.toThrow(message);
  });

  it('refuses an issuer certificate that does not match the signer', async () => {
    const h = hierarchies.get('P-256')!;
    const other = await issuerKey('P-256');
    expect(() => createLeafBuilder({ certificate: h.intermediate, signer: other.signer })).toThrow(/does not match/);
  });

  it('passes the sign context to the signer', async () => {
    const h = hierarchies.get('P-256')!;
    const seen: unknown[] = [];
    const signer = {
      ...h.key.signer,
      sign: (d: Uint8Array, c?: Readonly<Record<string, string>>) => (seen.push(c), h.key.signer.sign(d)),
    };
    await createLeafBuilder({ certificate: h.intermediate, signer }).build(base(), {
      serial: 'ab',
      profile: 'tls-server',
    });
    expect(seen).toEqual([{ serial: 'ab', profile: 'tls-server' }]);
  });
});

describe('IP text forms', () => {
  it.each([
    ['10.0.0.1', '0a000001', '10.0.0.1'],
    ['::1', '00000000000000000000000000000001', '::1'],
    ['2001:db8::', '20010db8000000000000000000000000', '2001:db8::'],
    ['2001:DB8:0:0:1:0:0:1', '20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201', '::ffff:c000:201'],
    ['fd00:0:0:0:0:0:1:2', 'fd000000000000000000000000010002', 'fd00::1:2'],
  ])('%s', (text, bytes, canonical) => {
    const b = parseIp(text)!;
    expect(hex(b)).toBe(bytes);
    expect(formatIp(b)).toBe(canonical);
  });
  it('rejects non-addresses', () => {
    expect(parseIp('example.test')).toBeNull();
    expect(parseIp('fe80::1%eth0')).toBeNull();
  });
});
