// Full ACME issuance flows (http-01) over loopback against `keyward serve`, per level of concurrent
// clients: certificates per second, flow latency, CPU of the server and of the PostgreSQL backends
// serving its database, certificates per CPU-second of both, requests, statements and commits per
// certificate. Then one level on the embedded database (PGlite). This process is the load
// generator (bench/acme-client.ts); DNS and http-01 answers come from bench/challenge-responder.ts.
//
//   npm run bench:acme                      levels 1,8,32,128 on PostgreSQL + 32 on PGlite, 20 s each
//   BENCH_LEVELS=32 BENCH_SECONDS=10 BENCH_PGLITE_LEVEL=0 npm run bench:acme
//   BENCH_SETTINGS='metrics: { enabled: false }'   adds YAML to the server's configuration
//   BENCH_STATEMENTS=1                      lists the statements per certificate, by SQL text
//   BENCH_STEPS=2                           flows stop after newOrder and the authorization
//   BENCH_NODE_FLAGS='--perf-basic-prof'    node flags for the server (perf, V8 settings)
//   BENCH_HISTORY=0                         no earlier orders in the database (default 30,000)
import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import { Pool } from 'undici';

import type { StatementStats } from '../src/db/statement-stats.ts';
import { freePort } from '../test/support/ca.ts';
import { BenchClient, ChainChecker, type Counters, directory } from './acme-client.ts';
import { addHistory } from './acme-history.ts';
import type { ResponderMessage, ResponderReady } from './challenge-responder.ts';

const LEVELS = (process.env.BENCH_LEVELS ?? '1,8,32,128').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const PGLITE_LEVEL = Number(process.env.BENCH_PGLITE_LEVEL ?? 32);
const base =
  process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ZONE = 'bench.test';
// BENCH_STEPS=N (1–5): each flow stops after its first N requests, so CPU per request kind shows as
// differences between runs; the "certs" columns then count these partial flows.
const STEPS = Number(process.env.BENCH_STEPS ?? 5);
// BENCH_HISTORY=N: orders the PostgreSQL database has issued before the run (bench/acme-history.ts).
const HISTORY = Number(process.env.BENCH_HISTORY ?? 30_000);
if (!Number.isInteger(STEPS) || STEPS < 1 || STEPS > 5) throw new Error('BENCH_STEPS must be 1 to 5');

const CLK_TCK = 100;
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime: fields 14 and 15 of stat, i.e. 11 and 12 after the command name.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}
/** Busy and total jiffies of the whole machine, for the share other processes took. */
function machineJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

// The server runs the compiled command line; build it if the sources changed.
execFileSync(process.execPath, ['bin/build.mjs'], { stdio: 'inherit' });

// ---- the challenge responder -------------------------------------------------------------------
const responder = fork(new URL('./challenge-responder.ts', import.meta.url).pathname, [], {
  execArgv: ['--import', 'tsx'],
  stdio: 'inherit',
});
const { dnsAddress, httpPort: challengePort } = await new Promise<ResponderReady>((resolve) =>
  responder.once('message', (m) => resolve(m as ResponderReady)),
);
async function tellThumbprints(thumbprints: string[]): Promise<void> {
  await new Promise<void>((resolve) => {
    responder.once('message', () => resolve());
    responder.send({ thumbprints } satisfies ResponderMessage);
  });
}

// ---- a keyward serve process --------------------------------------------------------------------
interface Server {
  proc: ChildProcess;
  pool: Pool;
  root: X509Certificate;
  dbName?: string;
  stats(): Promise<StatementStats | undefined>;
  stop(): Promise<void>;
}

async function startServer(databaseUrl: string | undefined): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-acme-'));
  const httpsPort = await freePort();
  const httpPort = await freePort();
  const configFile = join(dataDir, 'keyward.yaml');
  writeFileSync(
    configFile,
    `https: { listen: "127.0.0.1:${httpsPort}", hostnames: [localhost] }
http: { listen: "127.0.0.1:${httpPort}" }
validation: { httpPort: ${challengePort}, dnsResolver: "${dnsAddress}" }
rateLimits: { newOrdersPerAccount: { limit: 1000000, window: 1h }, certificatesPerName: { limit: 1000000, window: 1h } }
log: { level: info }
${process.env.BENCH_SETTINGS ?? ''}
`,
  );
  // BENCH_SETTINGS adds YAML to the server's configuration, e.g. "metrics: { enabled: false }".
  // BENCH_PROFILE=DIR writes a CPU profile of the server there.
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
  // BENCH_NODE_FLAGS adds node flags to the server (e.g. '--perf-basic-prof', V8 heap sizes).
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const proc = fork('bin/keyward.mjs', ['serve', '--data-dir', dataDir], {
    execArgv: [...profile, ...nodeFlags],
    env: { ...process.env, DATABASE_URL: databaseUrl ?? '', KEYWARD_CONFIG: configFile },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  // The log level `keyward serve` runs at, info: a request line per request, written to a file as
  // a deployment would ship it, so its cost is in the server's CPU.
  const log = createWriteStream(join(dataDir, 'server.log'));
  await new Promise<void>((resolve, reject) => {
    let started = false;
    proc.stdout!.on('data', (d: Buffer) => {
      log.write(d);
      const text = d.toString();
      if (!started && text.includes('Press Ctrl-C')) {
        started = true;
        resolve();
      }
      // The server's own warnings and errors explain failed flows.
      if (text.includes('"level":50') || text.includes('"level":40'))
        for (const line of text.split('\n'))
          if (line.includes('"level":50') || line.includes('"level":40'))
            console.error(`  server: ${line.slice(0, 400)}`);
    });
    proc.once('exit', (code) => reject(new Error(`keyward serve exited with ${code}`)));
  });
  const rootPem = await (await fetch(`http://127.0.0.1:${httpPort}/roots.pem`)).text();
  const pool = new Pool(`https://localhost:${httpsPort}`, {
    connections: 256,
    pipelining: 1,
    // A loaded machine (or the single-threaded embedded database) can be slow to accept.
    connect: { ca: rootPem, servername: 'localhost', timeout: 60_000 },
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  return {
    proc,
    pool,
    root: new X509Certificate(rootPem),
    stats: () =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve(undefined), 2000);
        proc.once('message', (m: { statementStats?: StatementStats }) => {
          clearTimeout(timer);
          resolve(m.statementStats);
        });
        proc.send('statement-stats');
      }),
    stop: async () => {
      await pool.close();
      proc.disconnect();
      proc.kill('SIGTERM');
      if (proc.exitCode === null) await new Promise((r) => proc.once('exit', r));
      await new Promise((r) => log.end(r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ---- one level ----------------------------------------------------------------------------------
interface Row {
  db: string;
  clients: number;
  certs: number;
  errors: number;
  seconds: number;
  p50: number;
  p99: number;
  serverCpu: number;
  pgCpu: number | undefined;
  driverCpu: number;
  requests: number;
  polls: number;
  statements: number | undefined;
  commits: number | undefined;
  flushed: number | undefined;
  pgXacts: number | undefined;
  load1: number;
  otherCores: number;
}

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function runLevel(
  server: Server,
  dbLabel: string,
  clients: number,
  seconds: number,
  pgCpu: () => Promise<number | undefined>,
  pgXacts: () => Promise<number | undefined>,
): Promise<Row> {
  const counters: Counters = { requests: 0, nonceFetches: 0, badNonces: 0, polls: 0 };
  const dir = await directory(server.pool, '/acme/directory');
  const workers = Array.from({ length: clients }, (_, i) => new BenchClient(server.pool, dir, i, ZONE, counters));
  await tellThumbprints(workers.map((w) => w.thumbprint));
  await Promise.all(workers.map((w) => w.register()));
  const checker = new ChainChecker(server.root);

  const load1 = loadavg()[0]!;
  const statsBefore = await server.stats();
  const serverBefore = cpuSeconds(server.proc.pid!);
  const pgBefore = await pgCpu();
  const xactsBefore = await pgXacts();
  const ownBefore = process.cpuUsage();
  const responderBefore = cpuSeconds(responder.pid!);
  const machineBefore = machineJiffies();
  counters.requests = 0;
  counters.polls = 0;

  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(
    workers.map(async (w) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        try {
          await w.flow(checker, STEPS);
          latencies.push(performance.now() - t);
        } catch (err) {
          errors++;
          if (errors <= 3) console.error(`  error: ${(err as Error).message}`);
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const own = process.cpuUsage(ownBefore);
  const driverCpu = (own.user + own.system) / 1e6 + cpuSeconds(responder.pid!) - responderBefore;
  const serverCpu = cpuSeconds(server.proc.pid!) - serverBefore;
  const pgAfter = await pgCpu();
  const machine = machineJiffies();
  const statsAfter = await server.stats();
  const xactsAfter = await pgXacts();
  const pgUsed = pgAfter !== undefined && pgBefore !== undefined ? pgAfter - pgBefore : undefined;
  const machineCores = ((machine.busy - machineBefore.busy) / (machine.total - machineBefore.total)) * cpus().length;
  latencies.sort((a, b) => a - b);
  // BENCH_STATEMENTS=1: which statements a certificate costs, most frequent first.
  if (process.env.BENCH_STATEMENTS && statsAfter && statsBefore && latencies.length > 0) {
    const rows = Object.entries(statsAfter.byText)
      .map(([text, n]) => [text, (n - (statsBefore.byText[text] ?? 0)) / latencies.length] as const)
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]);
    for (const [text, n] of rows) console.log(`  ${n.toFixed(2)}  ${text.replace(/\s+/g, ' ').slice(0, 220)}`);
  }
  return {
    db: dbLabel,
    clients,
    certs: latencies.length,
    errors,
    seconds: elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    serverCpu,
    pgCpu: pgUsed,
    driverCpu,
    requests: counters.requests,
    polls: counters.polls,
    // The embedded database is not counted (its queries don't pass the pg pool).
    statements:
      statsAfter && statsBefore && pgUsed !== undefined ? statsAfter.statements - statsBefore.statements : undefined,
    commits: statsAfter && statsBefore && pgUsed !== undefined ? statsAfter.commits - statsBefore.commits : undefined,
    flushed:
      statsAfter && statsBefore && pgUsed !== undefined
        ? statsAfter.flushedCommits - statsBefore.flushedCommits
        : undefined,
    pgXacts: xactsAfter !== undefined && xactsBefore !== undefined ? xactsAfter - xactsBefore : undefined,
    load1,
    otherCores: Math.max(0, machineCores - (serverCpu + (pgUsed ?? 0) + driverCpu) / elapsed),
  };
}

const HEAD = [
  'db',
  'clients',
  'certs',
  'errors',
  'certs/s',
  'p50 ms',
  'p99 ms',
  'server CPU s',
  'PG CPU s',
  'certs per CPU-s',
  'req/cert',
  'polls/cert',
  'stmts/cert',
  'commits/cert',
  'flushed/cert',
  'PG xacts/cert',
  'driver CPU s',
  'load1',
  'other cores',
];
function cells(r: Row): string[] {
  const per = (n: number | undefined, d = 1) => (n === undefined || r.certs === 0 ? '–' : (n / r.certs).toFixed(d));
  return [
    r.db,
    String(r.clients),
    String(r.certs),
    String(r.errors),
    (r.certs / r.seconds).toFixed(1),
    r.p50.toFixed(0),
    r.p99.toFixed(0),
    r.serverCpu.toFixed(2),
    r.pgCpu === undefined ? 'in server' : r.pgCpu.toFixed(2),
    (r.certs / Math.max(0.01, r.serverCpu + (r.pgCpu ?? 0))).toFixed(0),
    per(r.requests, 2),
    per(r.polls, 2),
    per(r.statements),
    per(r.commits),
    per(r.flushed),
    per(r.pgXacts),
    r.driverCpu.toFixed(2),
    r.load1.toFixed(2),
    r.otherCores.toFixed(2),
  ];
}
const printRow = (r: Row) => console.log(`| ${cells(r).join(' | ')} |`);

// ---- the run ------------------------------------------------------------------------------------
console.log(
  `bench:acme — http-01, CAA on, log level info (request lines to a file), ${SECONDS} s per level; driver: undici keep-alive, ES256, one account per worker, ` +
    `every certificate checked (SAN, key, chain to the root)\n` +
    `machine: ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} at start\n` +
    `statements and commits: counted by the server's database layer (commits = transactions that wrote; flushed = those that waited for the WAL flush, i.e. all but synchronous_commit=off); ` +
    `PG xacts: pg_stat_database.xact_commit of the bench database (read-only statements included)\n`,
);
console.log(`| ${HEAD.join(' | ')} |`);
console.log(`|${HEAD.map(() => '---').join('|')}|`);

const rows: Row[] = [];
const dbName = `keyward_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`);
try {
  const url = new URL(base);
  url.pathname = `/${dbName}`;
  const server = await startServer(url.toString());
  /**
   * CPU of the PostgreSQL backends serving the bench database, plus the WAL writer, which flushes
   * the commits made without waiting (synchronous_commit off): the sum of what each backend ever
   * seen had used when last seen. Sampled twice a second, so a backend that exits during a level
   * (the pool closes connections idle for 10 s) keeps what it used instead of taking it out of
   * the sum.
   */
  const seen = new Map<number, number>();
  const pgCpu = async () => {
    const { rows: pids } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type = 'walwriter'`,
      [dbName],
    );
    for (const { pid } of pids) seen.set(pid, Math.max(seen.get(pid) ?? 0, cpuSeconds(pid)));
    return [...seen.values()].reduce((sum, s) => sum + s, 0);
  };
  let sampling = Promise.resolve<unknown>(undefined);
  const sampler = setInterval(() => (sampling = sampling.then(pgCpu, () => undefined)), 500);
  const pgXacts = async () => {
    await admin.query('SELECT pg_stat_clear_snapshot()');
    const { rows: r } = await admin.query<{ n: string }>(
      'SELECT xact_commit AS n FROM pg_stat_database WHERE datname = $1',
      [dbName],
    );
    return Number(r[0]?.n ?? 0);
  };
  try {
    if (HISTORY > 0) {
      const db = new pg.Client({ connectionString: url.toString() });
      await db.connect();
      await addHistory(db, HISTORY);
      await db.end();
    }
    // Warm-up (JIT, pools, caches), not reported.
    await runLevel(server, 'warm-up', 8, Math.min(3, SECONDS), pgCpu, pgXacts);
    for (const clients of LEVELS) {
      const row = await runLevel(server, 'PostgreSQL', clients, SECONDS, pgCpu, pgXacts);
      rows.push(row);
      printRow(row);
    }
  } finally {
    clearInterval(sampler);
    await sampling;
    await server.stop();
  }
  if (PGLITE_LEVEL > 0) {
    const embedded = await startServer(undefined);
    const none = async () => undefined;
    try {
      await runLevel(embedded, 'warm-up', 8, Math.min(3, SECONDS), none, none);
      const row = await runLevel(embedded, 'PGlite', PGLITE_LEVEL, SECONDS, none, none);
      rows.push(row);
      printRow(row);
    } finally {
      await embedded.stop();
    }
  }
} finally {
  responder.disconnect();
  if (!process.env.BENCH_KEEP) await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
console.log(
  `\nload average at end: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}; "other cores": cores busy with anything but server, PostgreSQL backends and the driver`,
);
if (rows.some((r) => r.errors > 0)) process.exitCode = 1;
