// Responses per second for cached OCSP lookups (RFC 5019 GET, one SHA-1 CertID, no nonce) over
// loopback. The responder runs in this process (`keyward serve`'s HTTP app); the load generator is a
// child process (bench/http-load.ts: raw keep-alive sockets), so the two don't share an event loop,
// and its CPU is reported apart from the server's.
//
// BENCH_SECONDS, BENCH_WARMUP (seconds of the same load first, 3), BENCH_CONCURRENCY (connections,
// 32), BENCH_PIPELINE (requests in flight per connection, 1), BENCH_DRIVER=undici, BENCH_LOG=info,
// BENCH_PROFILE=<file> (see below), and BENCH_FLOOR=1: then the same load also runs against a bare
// node:http server in this process that answers every request with one of the same answers and
// headers, the floor for node:http here (BENCH_FLOOR=limits: with the listener's limits).
import 'reflect-metadata';

import { fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
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
import { limitServer, listenerOptions } from '../src/http/node-listener.ts';
import { answerHeaders } from '../src/http/ocsp-get.ts';
import { startServer } from '../src/server.ts';
import type { LoadResult } from './http-load.ts';

const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const pipeline = Number(process.env.BENCH_PIPELINE ?? 1);
const warmUp = Number(process.env.BENCH_WARMUP ?? 3);
const floor = process.env.BENCH_FLOOR === '1' || process.env.BENCH_FLOOR === 'limits';
/** BENCH_PROFILE=<file>: a CPU profile of the server during the timed run (open it in Chrome DevTools). */
const profileFile = process.env.BENCH_PROFILE;
/**
 * The log level, info by default as `keyward serve` runs: each answer writes its request line (to a
 * file here; BENCH_LOG=silent leaves it out).
 */
const logLevel = process.env.BENCH_LOG ?? 'info';

type Measured = LoadResult & { serverCpu: number; serverSystem: number };

/** Runs the load generator (a child process) against `urls`; the server CPU is this process's. */
async function measure(urls: string[], seconds?: number): Promise<Measured> {
  const cpuBefore = process.cpuUsage();
  const child = fork(fileURLToPath(new URL('./http-load.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      BENCH_URLS: JSON.stringify(urls),
      BENCH_MIN_BODY: '100',
      ...(seconds === undefined ? {} : { BENCH_SECONDS: String(seconds) }),
    },
  });
  const result = await new Promise<LoadResult>((resolve, reject) => {
    child.once('message', (m) => resolve(m as LoadResult));
    child.once('error', reject);
  });
  const cpu = process.cpuUsage(cpuBefore);
  return { ...result, serverCpu: (cpu.user + cpu.system) / 1e6, serverSystem: cpu.system / 1e6 };
}

function report(label: string, r: Measured): void {
  const perSecond = (n: number) => Math.round(n).toLocaleString('en');
  console.log(
    `${label.padEnd(20)}${perSecond(r.ok / r.elapsed)} responses/s over loopback, ${concurrency} connections × ${pipeline} in flight, ${r.elapsed.toFixed(1)} s; failures ${r.bad}`,
  );
  console.log(
    `${''.padEnd(20)}server ${r.serverCpu.toFixed(2)} CPU-s: ${((r.serverCpu * 1e6) / r.ok).toFixed(1)} µs per response (${perSecond(r.ok / r.serverCpu)} per CPU-second, ${Math.round((100 * r.serverSystem) / r.serverCpu)} % in the kernel); load generator ${((r.cpu * 1e6) / r.ok).toFixed(1)} µs per response; p50 ${r.p50} ms, p99 ${r.p99} ms`,
  );
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
  const logFile = join(dataDir, 'keyward.log');
  const server = await startServer(ctx, createLogger(logLevel, logFile), commandsByName);
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
    // Warm the in-memory answers, then the JIT under the same load, before the timed run; this also
    // lets the work `serve` starts with (CRLs, OCSP signers) finish, which otherwise lands in the
    // timed run's server CPU (a first run measured ~1.5x the CPU per response of a second one).
    for (const u of urls) await (await fetch(u)).arrayBuffer();
    await measure(urls, warmUp);
    const profiler = profileFile ? new Session() : undefined;
    if (profiler) {
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    const result = await measure(urls);
    if (profiler) {
      const { profile } = await profiler.post('Profiler.stop');
      writeFileSync(profileFile!, JSON.stringify(profile));
      profiler.disconnect();
    }
    const signed = (await signs()) - signsBefore;
    console.log(
      `database            ${ctx.database.kind}; signatures during the run ${signed}; log level ${logLevel} (${existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').length - 1 : 0} lines so far)`,
    );
    report('cached OCSP (GET)', result);
    if (floor) {
      // One of the same answers with the same headers, from a bare node:http server.
      const res = await fetch(urls[0]!);
      const body = Buffer.from(await res.arrayBuffer());
      const answer = {
        der: body,
        thisUpdate: new Date(res.headers.get('last-modified')!),
        nextUpdate: new Date(res.headers.get('expires')!),
      };
      const handler = (_req: IncomingMessage, out: ServerResponse) => {
        const h = answerHeaders(answer);
        out.writeHead(200, [
          'content-type',
          'application/ocsp-response',
          'etag',
          h.etag,
          'last-modified',
          h['last-modified'],
          'expires',
          h.expires,
          'cache-control',
          h['cache-control'],
          'content-length',
          String(body.length),
        ]);
        out.end(body);
      };
      // BENCH_FLOOR=limits: with the listener's limits (timeouts, idle sockets), as `serve` sets them.
      const bare =
        process.env.BENCH_FLOOR === 'limits'
          ? limitServer(createHttpServer(listenerOptions(config.limits), handler), config.limits)
          : createHttpServer(handler);
      const port = await new Promise<number>((resolve) =>
        bare.listen(0, '127.0.0.1', () => resolve((bare.address() as { port: number }).port)),
      );
      const bareUrls = urls.map((u) => u.replace(/^http:\/\/[^/]+/, `http://127.0.0.1:${port}`));
      await measure(bareUrls, warmUp);
      report('bare node:http', await measure(bareUrls));
      bare.closeAllConnections();
      bare.close();
    }
    console.log(
      `load average        ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')} (${availableParallelism()} cores)`,
    );
  } finally {
    await server.close();
  }
} finally {
  await ctx.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (scratch) await adminQuery(`DROP DATABASE IF EXISTS ${scratch}`);
}
