// @peculiar/x509 needs the Reflect metadata API before it is first imported.
import 'reflect-metadata';

import { randomBytes, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as x509 from '@peculiar/x509';
import pg from 'pg';

import { parseCsr } from '../src/ca/csr.ts';
import { createLeafBuilder, type LeafSpec } from '../src/ca/leaf-builder.ts';
import { normalizeSans } from '../src/ca/names.ts';
import { checkAgainstProfile } from '../src/ca/profile-check.ts';
import { serialNumberContent } from '../src/ca/tbs-certificate.ts';
import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import { statementStats } from '../src/db/statement-stats.ts';
import { formatTable, measure, type Measurement } from './measure.ts';
import { signingFixture } from './sign-fixtures.ts';

const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const fixture = await signingFixture();
const builder = createLeafBuilder(fixture.issuer);
const issuerCert = new x509.X509Certificate(new Uint8Array(fixture.issuer.certificate));
const issuerKeyId = issuerCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;

/** The leaf our builder makes, through X509CertificateGenerator: the same extensions, built per certificate. */
async function generatorLeaf(spec: LeafSpec): Promise<x509.X509Certificate> {
  const publicKey = new x509.PublicKey(new Uint8Array(spec.subjectPublicKeyInfo));
  return x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(serialNumberContent(spec.serial)).toString('hex'),
    subject: new x509.Name([{ CN: [{ utf8String: spec.commonName! }] }]),
    issuer: issuerCert.subjectName,
    notBefore: spec.notBefore,
    notAfter: spec.notAfter,
    publicKey,
    signingKey: fixture.issuerKeys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(spec.extKeyUsages),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      new x509.AuthorityKeyIdentifierExtension(issuerKeyId),
      new x509.SubjectAlternativeNameExtension([
        ...spec.sans.dns.map((value) => ({ type: 'dns' as const, value })),
        ...spec.sans.ip.map((value) => ({ type: 'ip' as const, value })),
        ...spec.sans.uri.map((value) => ({ type: 'url' as const, value })),
      ]),
      new x509.CRLDistributionPointsExtension([spec.crlDistributionPoint!]),
      new x509.AuthorityInfoAccessExtension({ ocsp: [spec.ocspUrl!], caIssuers: [spec.caIssuersUrl!] }),
    ],
  });
}

// A TBSCertificate-sized message, so the raw row signs what a certificate costs to sign.
const tbsSized = builder.tbs(fixture.leafSpec());
const message = randomBytes(tbsSized.length);

const rows: Measurement[] = [];
rows.push(
  await measure('P-256 sign (node:crypto)', () => sign('sha256', message, fixture.issuerPrivateKey), { seconds }),
);
rows.push(await measure('X509CertificateGenerator.create', () => generatorLeaf(fixture.leafSpec()), { seconds }));
rows.push(await measure('createLeafBuilder().build', () => builder.build(fixture.leafSpec()), { seconds }));
rows.push(await measure('createLeafBuilder().tbs (no signing)', () => builder.tbs(fixture.leafSpec()), { seconds }));

// The signing core, then the same with the database (serial reserved, key use audited,
// certificate stored), on PGlite, or on PostgreSQL when BENCH_DATABASE_URL names a scratch database.
const csrPem = await benchCsr();
// The core is called with a decided request (ARCHITECTURE.md); CSR parsing belongs to the front end
// and is its own row. Without the database: the core's checks, assembly and signature.
const profile = config0().profiles.get('mtls')!;
const decided = parseCsr(csrPem);
rows.push(await measure('parseCsr (front end: parse + verify)', () => parseCsr(csrPem), { seconds }));
rows.push(
  await measure(
    'core without database',
    () => {
      const sans = normalizeSans(decided.sans);
      checkAgainstProfile(profile, { type: decided.keyType }, sans, profile.defaultLifetime);
      return builder.build({
        ...fixture.leafSpec(),
        subjectPublicKeyInfo: decided.subjectPublicKeyInfo,
        sans,
        commonName: decided.commonName,
      });
    },
    { seconds },
  ),
);
// With BENCH_DATABASE_URL or DATABASE_URL (a PostgreSQL server), a scratch database of its own.
const serverUrl = process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL;
const scratch = serverUrl ? `kw_bench_sign_${process.pid}` : undefined;
const admin = serverUrl ? new pg.Client({ connectionString: serverUrl }) : undefined;
if (admin && scratch) {
  await admin.connect();
  await admin.query(`CREATE DATABASE ${scratch}`);
}
const databaseUrl =
  serverUrl && scratch ? Object.assign(new URL(serverUrl), { pathname: `/${scratch}` }).toString() : '';
const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-'));
const config = config0(dataDir, databaseUrl);
const ctx = await openContext({ ...config, log: { level: 'silent' } });
await ctx.ca.init(
  { organization: 'Bench', root: { ...config.ca.root, keyType: 'ecdsa-p256' }, intermediate: config.ca.intermediate },
  'bench',
);
const issueDecided = (csr: ReturnType<typeof parseCsr>) =>
  ctx.ca.issue({
    subjectPublicKeyInfo: csr.subjectPublicKeyInfo,
    keyType: csr.keyType,
    sans: csr.sans,
    commonName: csr.commonName,
    profile: 'mtls',
    requester: 'bench',
  });
// As a front end does: the CSR read and verified for every certificate.
const issueFromCsr = () => issueDecided(parseCsr(csrPem));
// Issuer rows from memory, as `keyward serve` keeps them (it follows the issuers channel).
const unfollow = await ctx.ca.followIssuers(ctx.database.listen);
// Serial reserved with the key use's audit event (group-committed), signed, certificate stored,
// at 1, 8 and 32 callers; then at 32 from a decided request (the CSR read once), the core alone.
const dbKind = ctx.database.kind === 'embedded' ? 'PGlite' : 'PostgreSQL';
const costs: string[] = [];
const levels: [string, () => Promise<unknown>, number][] = [
  ...[1, 8, 32].map((c): [string, () => Promise<unknown>, number] => [
    `core with database (${dbKind}, ${c} concurrent)`,
    issueFromCsr,
    c,
  ]),
  [`core with database, decided request (${dbKind}, 32 concurrent)`, () => issueDecided(decided), 32],
];
for (const [name, fn, concurrency] of levels) {
  await measure('warm-up', fn, { seconds: 0.3, concurrency });
  const cpu0 = process.cpuUsage();
  const pg0 = await postgresCpu();
  const { statements, flushedCommits } = statementStats;
  const row = await measure(name, fn, { seconds, concurrency, warmupSeconds: 0 });
  const cpu = process.cpuUsage(cpu0);
  const pg = (await postgresCpu()) - pg0;
  rows.push(row);
  const per = (n: number) => (n / row.ops).toFixed(2);
  costs.push(
    `${name}: node ${per((cpu.user + cpu.system) / 1000)} ms CPU, PostgreSQL ${scratch ? per(pg * 1000) : '–'} ms CPU, ` +
      `${per(statementStats.statements - statements)} statements, ${per(statementStats.flushedCommits - flushedCommits)} flushed commits per certificate`,
  );
}
await unfollow();
await ctx.close();
rmSync(dataDir, { recursive: true, force: true });
if (admin && scratch) {
  await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`);
  await admin.end();
}

console.log(
  `Leaf: P-256 issuer, P-256 subject, ${tbsSized.length}-byte TBSCertificate; ${seconds} s per row; node ${process.version}\n`,
);
console.log(formatTable(rows, 'X509CertificateGenerator.create'));
console.log(
  `\nper certificate (load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}):`,
);
for (const line of costs) console.log(`  ${line}`);
const byName = (n: string): number => rows.find((r) => r.name === n)!.opsPerSecond;
const ratio = byName('createLeafBuilder().build') / byName('X509CertificateGenerator.create');
const ofRaw = byName('createLeafBuilder().build') / byName('P-256 sign (node:crypto)');
const core = byName('core without database') / byName('X509CertificateGenerator.create');
console.log(
  `core without database / generator: ${core.toFixed(1)}× (target ≥ 20×) ${core >= 20 ? 'OK' : 'BELOW TARGET'}`,
);
console.log(`\nbuilder / generator: ${ratio.toFixed(1)}× (target ≥ 20×) ${ratio >= 20 ? 'OK' : 'BELOW TARGET'}`);
console.log(`builder / raw signature: ${(ofRaw * 100).toFixed(0)}% of the raw signing rate`);
const audited = byName(`core with database (${dbKind}, 32 concurrent)`);
console.log(
  `audited issuance on ${dbKind} at 32 callers: ${audited.toFixed(0)}/s (target ≥ 1,000/s on PostgreSQL) ${audited >= 1000 ? 'OK' : 'BELOW TARGET'}`,
);

/**
 * CPU seconds of the PostgreSQL backends serving the scratch database and of the WAL writer (when
 * the server runs on this machine; 0 otherwise). Backends come and go with the pool, so this reads
 * the ones alive at each end: good enough across a level, as the pool keeps its connections.
 */
async function postgresCpu(): Promise<number> {
  if (!admin || !scratch) return 0;
  const { rows: pids } = await admin.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type = 'walwriter'`,
    [scratch],
  );
  let sum = 0;
  for (const { pid } of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      sum += (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks
    } catch {
      // Not on this machine, or gone.
    }
  }
  return sum;
}

async function benchCsr(): Promise<string> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=svc.bench.internal',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'svc.bench.internal' },
        { type: 'url', value: 'spiffe://bench/ns/a/sa/b' },
      ]),
    ],
  });
  return csr.toString('pem');
}

function config0(dataDir?: string, databaseUrl = '') {
  return loadConfig({
    dataDir,
    env: { ...process.env, KEYWARD_CONFIG: '', DATABASE_URL: databaseUrl },
  });
}
