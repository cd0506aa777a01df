// Responses per second for cached OCSP lookups (RFC 5019 GET, one SHA-1 CertID, no nonce) over
// loopback. The responder runs in this process (`keyward serve`'s HTTP app); the load generator is a
// child process (this file with the argument `load`), so the two don't share an event loop.
import 'reflect-metadata';

import { fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import pg from 'pg';

import { seq } from '../src/ca/der.ts';
import { issuerHashes, makeCertId } from '../src/ca/ocsp.ts';
import { RevocationPublisher } from '../src/ca/revocation-publisher.ts';
import { commandsByName } from '../src/cli/registry.ts';
import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import { createLogger } from '../src/http/log.ts';
import { startServer } from '../src/server.ts';

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
/** BENCH_PROFILE=<file>: a CPU profile of the server during the timed run (open it in Chrome DevTools). */
const profileFile = process.env.BENCH_PROFILE;
/** BENCH_LOG=info: with the request line written (to stdout: redirect it), as `keyward serve` runs. */
const logLevel = process.env.BENCH_LOG ?? 'silent';

if (process.argv[2] === 'load') {
  // undici's Pool rather than fetch: fetch costs the load generator several times what a cached
  // answer costs the server, and the two share this machine's cores.
  const { Pool } = await import('undici');
  const urls = (JSON.parse(process.env.BENCH_URLS!) as string[]).map((u) => new URL(u));
  const pool = new Pool(urls[0]!.origin, { connections: concurrency, pipelining: 1 });
  const deadline = performance.now() + seconds * 1000;
  let ok = 0;
  let bad = 0;
  const latencies: number[] = [];
  const worker = async (w: number) => {
    for (let i = w; performance.now() < deadline; i++) {
      const t = performance.now();
      const res = await pool.request({ method: 'GET', path: urls[i % urls.length]!.pathname });
      const body = new Uint8Array(await res.body.arrayBuffer());
      if (res.statusCode === 200 && body.length > 100) ok++;
      else bad++;
      if ((i & 15) === 0) latencies.push(performance.now() - t);
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!.toFixed(2);
  process.send!({ ok, bad, elapsed, p50: pct(0.5), p99: pct(0.99) });
  process.exit(0);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-ocsp-'));
// On PostgreSQL: a scratch database, dropped at the end, so the run starts from an empty CA.
const baseUrl = process.env.DATABASE_URL;
const scratch = baseUrl ? `kw_bench_${randomBytes(4).toString('hex')}` : undefined;
async function adminQuery(q: string): Promise<void> {
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  await admin.query(q);
  await admin.end();
}
let databaseUrl: string | undefined;
if (baseUrl && scratch) {
  await adminQuery(`CREATE DATABASE ${scratch}`);
  const u = new URL(baseUrl);
  u.pathname = `/${scratch}`;
  databaseUrl = u.toString();
}
const configFile = join(dataDir, 'keyward.yaml');
writeFileSync(
  configFile,
  `log: { level: ${logLevel} }\nhttp: { listen: "127.0.0.1:${await freePort()}" }\nhttps: { listen: "127.0.0.1:${await freePort()}" }\n` +
    (databaseUrl ? `database: { url: "${databaseUrl}" }\n` : ''),
);
const config = loadConfig({ configFile, dataDir, env: {} });
const ctx = await openContext(config, { principal: 'bench' });
try {
  const { intermediate } = await ctx.ca.init(
    { organization: 'Bench', root: config.ca.root, intermediate: config.ca.intermediate },
    'bench',
  );
  const server = await startServer(ctx, createLogger(logLevel), commandsByName);
  try {
    const hashes = issuerHashes(intermediate.certificate);
    const urls: string[] = [];
    for (let i = 0; i < 200; i++) {
      const spki = new Uint8Array(
        generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' }),
      );
      const issued = await ctx.ca.issue({
        subjectPublicKeyInfo: spki,
        keyType: 'ecdsa-p256',
        sans: { dns: [`s${i}.bench`], ip: [], uri: [], email: [] },
        profile: 'tls-server',
        requester: 'bench',
      });
      const certId = makeCertId(hashes, 'sha1', Buffer.from(issued.serial, 'hex'));
      // OCSPRequest { TBSRequest { requestList { Request { reqCert } } } }
      const request = seq(seq(seq(seq(certId.raw))));
      urls.push(`${server.httpUrl}/ocsp/${encodeURIComponent(Buffer.from(request).toString('base64'))}`);
    }
    // Pre-sign everything, as the background refresher would, so the run measures cached lookups.
    const service = new RevocationPublisher(ctx, 'bench');
    await service.ensureSigners();
    await service.refreshOcsp(100);
    const signs = async () =>
      Number(
        (
          await ctx.database.db
            .selectFrom('audit_events')
            .select((eb) => eb.fn.countAll().as('n'))
            .where('action', '=', 'sign-ocsp')
            .executeTakeFirstOrThrow()
        ).n,
      );
    const signsBefore = await signs();
    // Warm the in-memory answers and the JIT before the timed run.
    for (const u of urls) await (await fetch(u)).arrayBuffer();
    const profiler = profileFile ? new Session() : undefined;
    if (profiler) {
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    const cpuBefore = process.cpuUsage();

    const child = fork(fileURLToPath(import.meta.url), ['load'], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, BENCH_URLS: JSON.stringify(urls) },
    });
    const result = await new Promise<{ ok: number; bad: number; elapsed: number; p50: string; p99: string }>(
      (resolve, reject) => {
        child.once('message', (m) => resolve(m as never));
        child.once('error', reject);
      },
    );
    const cpu = process.cpuUsage(cpuBefore);
    if (profiler) {
      const { profile } = await profiler.post('Profiler.stop');
      writeFileSync(profileFile!, JSON.stringify(profile));
      profiler.disconnect();
    }
    const serverCpu = (cpu.user + cpu.system) / 1e6;
    const signed = (await signs()) - signsBefore;
    console.log(`database            ${ctx.database.kind}`);
    console.log(
      `cached OCSP (GET)   ${Math.round(result.ok / result.elapsed).toLocaleString('en')} responses/s over loopback, ${concurrency} connections, ${result.elapsed.toFixed(1)} s`,
    );
    console.log(
      `latency             p50 ${result.p50} ms, p99 ${result.p99} ms; failures ${result.bad}; signatures during the run ${signed}`,
    );
    console.log(
      `server CPU          ${serverCpu.toFixed(2)} s: ${Math.round(result.ok / serverCpu).toLocaleString('en')} responses per server CPU-second; load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await server.close();
  }
} finally {
  await ctx.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (scratch) await adminQuery(`DROP DATABASE IF EXISTS ${scratch}`);
}
