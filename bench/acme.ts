// Full ACME issuance flows per second over loopback against `keyward serve` on PostgreSQL, with the
// CPU seconds used by the server and by PostgreSQL. This process is the load generator.
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import acme from 'acme-client';
import pg from 'pg';

import { freePort } from '../test/support/ca.ts';
import type { ResponderMessage, ResponderReady } from './challenge-responder.ts';

const LEVELS = (process.env.BENCH_LEVELS ?? '1,8,32,128').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const base =
  process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

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
/** CPU of the PostgreSQL backends serving the bench database (the server's pool keeps them alive). */
async function postgresCpu(): Promise<number> {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [dbName]);
  return rows.reduce((sum, r) => sum + cpuSeconds(r.pid), 0);
}

const dbName = `keyward_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`);
const url = new URL(base);
url.pathname = `/${dbName}`;

// DNS and http-01 answers come from a process of their own (bench/challenge-responder.ts).
const responder = fork(new URL('./challenge-responder.ts', import.meta.url).pathname, [], {
  execArgv: ['--import', 'tsx'],
  stdio: 'inherit',
});
const { dnsAddress, httpPort: challengePort } = await new Promise<ResponderReady>((resolve) =>
  responder.once('message', (m) => resolve(m as ResponderReady)),
);
const pending = new Map<number, () => void>();
let messageId = 0;
responder.on('message', (m: { id?: number }) => {
  if (m.id === undefined) return;
  pending.get(m.id)?.();
  pending.delete(m.id);
});
function tell(message: DistributiveOmit<ResponderMessage, 'id'>): Promise<void> {
  const id = ++messageId;
  return new Promise<void>((resolve) => {
    pending.set(id, resolve);
    responder.send({ ...message, id });
  });
}
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-acme-'));
const httpsPort = await freePort();
const configFile = join(dataDir, 'keyward.yaml');
writeFileSync(
  configFile,
  `https: { listen: "127.0.0.1:${httpsPort}", hostnames: [localhost] }
http: { listen: "127.0.0.1:${await freePort()}" }
validation: { httpPort: ${challengePort}, dnsResolver: "${dnsAddress}", caa: false }
log: { level: warn }
${process.env.BENCH_SETTINGS ?? ''}
`,
);
// BENCH_SETTINGS adds YAML to the server's configuration, e.g. "metrics: { enabled: false }".
// BENCH_PROFILE=DIR writes a CPU profile of the server there.
const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
const server = spawn(process.execPath, [...profile, 'bin/keyward.mjs', 'serve', '--data-dir', dataDir], {
  env: { ...process.env, DATABASE_URL: url.toString(), KEYWARD_CONFIG: configFile },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((resolve, reject) => {
  let out = '';
  server.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('Press Ctrl-C')) resolve();
    // The server's own warnings and errors explain failed flows.
    for (const line of d.toString().split('\n'))
      if (line.includes('"level":50') || line.includes('"level":40')) console.error(`  server: ${line.slice(0, 400)}`);
  });
  server.once('exit', (code) => reject(new Error(`keyward serve exited with ${code}`)));
});
acme.axios.defaults.httpsAgent = new Agent({ rejectUnauthorized: false, keepAlive: true, maxSockets: 256 });
acme.setLogger(() => {});
const directoryUrl = `https://localhost:${httpsPort}/acme/directory`;

let sequence = 0;
async function flow(client: acme.Client): Promise<void> {
  const name = `f${++sequence}.bench.test`;
  const [, csr] = await acme.crypto.createCsr({ altNames: [name] }, await acme.crypto.createPrivateEcdsaKey());
  await client.auto({
    csr,
    challengePriority: ['http-01'],
    skipChallengeVerification: true,
    challengeCreateFn: (_authz, ch, keyAuthorization) => tell({ name, token: ch.token, keyAuthorization }),
    challengeRemoveFn: (_authz, ch) => tell({ remove: ch.token }),
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

console.log(
  `keyward serve on PostgreSQL (${dbName}); ${SECONDS} s per level; http-01; load generator in this process, DNS and http-01 answers in another\n`,
);
console.log('clients  flows  errors  flows/s   p50 ms   p99 ms  server CPU s  postgres CPU s  certs per CPU-s');
for (const clients of LEVELS) {
  const accounts = await Promise.all(
    Array.from({ length: clients }, async () => {
      // Poll quickly: acme-client's default first back-off (5 s) would measure the client, not us.
      const c = new acme.Client({
        directoryUrl,
        accountKey: await acme.crypto.createPrivateEcdsaKey(),
        backoffMin: 20,
        backoffMax: 200,
        backoffAttempts: 100,
      });
      await c.createAccount({ termsOfServiceAgreed: true });
      return c;
    }),
  );
  const serverBefore = cpuSeconds(server.pid!);
  const pgBefore = await postgresCpu();
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    accounts.map(async (c) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        try {
          await flow(c);
          latencies.push(performance.now() - t);
        } catch (err) {
          errors++;
          if (errors <= 3) console.error(`  error: ${(err as Error).message}`);
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const serverCpu = cpuSeconds(server.pid!) - serverBefore;
  const pgCpu = (await postgresCpu()) - pgBefore;
  latencies.sort((a, b) => a - b);
  const flows = latencies.length;
  console.log(
    [
      String(clients).padStart(7),
      String(flows).padStart(6),
      String(errors).padStart(7),
      (flows / elapsed).toFixed(1).padStart(8),
      percentile(latencies, 50).toFixed(0).padStart(8),
      percentile(latencies, 99).toFixed(0).padStart(8),
      serverCpu.toFixed(2).padStart(13),
      pgCpu.toFixed(2).padStart(15),
      (flows / Math.max(0.01, serverCpu + pgCpu)).toFixed(0).padStart(16),
    ].join(' '),
  );
}

server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
responder.disconnect();
if (!process.env.BENCH_KEEP) await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
await admin.end();
rmSync(dataDir, { recursive: true, force: true });
