// Time and memory to publish the CRL of one shard holding BENCH_CRL_ENTRIES (default 1,000,000)
// revoked certificates. Uses PostgreSQL when DATABASE_URL is set (a scratch database is created and
// dropped), else the embedded PGlite in a temporary directory.
import 'reflect-metadata';

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { sql } from 'kysely';

import { publishCrl } from '../src/ca/crl-publisher.ts';
import { RevocationPublisher } from '../src/ca/revocation-publisher.ts';
import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import { createDatabase, dropDatabase } from '../test/support/db.ts';

const entries = Number(process.env.BENCH_CRL_ENTRIES ?? 1_000_000);
const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-crl-'));
const baseUrl = process.env.DATABASE_URL;
let scratch: string | undefined;
let databaseUrl: string | undefined;
if (baseUrl) {
  scratch = `kw_bench_${randomBytes(4).toString('hex')}`;
  databaseUrl = await createDatabase(baseUrl, scratch);
}
const configFile = join(dataDir, 'keyward.yaml');
writeFileSync(configFile, `log: { level: silent }\n${databaseUrl ? `database: { url: "${databaseUrl}" }\n` : ''}`);
const config = loadConfig({ configFile, dataDir, env: {} });
const ctx = await openContext(config, { principal: 'bench' });

try {
  const { intermediate } = await ctx.ca.init(
    { organization: 'Bench', root: config.ca.root, intermediate: config.ca.intermediate },
    'bench',
  );
  const db = ctx.database.db;
  const t0 = performance.now();
  // One statement: reservations and certificates (the certificate references its reservation).
  await sql`
    WITH r AS (
      INSERT INTO serial_reservations (serial, issuer_id, profile, requester, request, status)
      SELECT '1' || lpad(to_hex(g), 31, '0'), ${intermediate.id}, 'tls-server', 'bench', '{}'::jsonb, 'issued'
      FROM generate_series(1, ${entries}) AS g
      RETURNING serial
    )
    INSERT INTO certificates (serial, issuer_id, der, sans, not_before, not_after, profile, spki_sha256, requester, status, revoked_at, revocation_reason, crl_shard)
    SELECT serial, ${intermediate.id}, '\\x00'::bytea, '{"dns":[],"ip":[],"uri":[],"email":[]}'::jsonb, now() - interval '1 day',
           now() + interval '30 days', 'tls-server', decode(md5(serial), 'hex'), 'bench', 'revoked',
           now() - (ascii(right(serial, 1)) % 60) * interval '1 minute', (ARRAY[0, 1, 3, 4, 5, 9])[1 + ascii(right(serial, 1)) % 6], 0
    FROM r`.execute(db);
  await sql`ANALYZE certificates`.execute(db);
  const insertSeconds = (performance.now() - t0) / 1000;

  const service = new RevocationPublisher(ctx, 'bench');
  global.gc?.();
  const base = process.memoryUsage();
  let peakRss = base.rss;
  let peakHeap = base.heapUsed + base.external + base.arrayBuffers;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed + m.external + m.arrayBuffers);
  }, 20);
  const t1 = performance.now();
  const published = await publishCrl(service.crl, intermediate, 0);
  const publishSeconds = (performance.now() - t1) / 1000;
  clearInterval(sampler);
  const crl = await db
    .selectFrom('crls')
    .select('der')
    .where('issuer_id', '=', intermediate.id)
    .where('shard', '=', 0)
    .executeTakeFirstOrThrow();

  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  console.log(`database            ${ctx.database.kind}${databaseUrl ? ' (PostgreSQL)' : ' (PGlite)'}`);
  console.log(
    `revoked entries     ${published?.entries.toLocaleString('en')} (insert took ${insertSeconds.toFixed(1)} s)`,
  );
  console.log(`CRL size            ${mb(crl.der?.length ?? 0)} MiB, CRL number ${published?.crlNumber}`);
  console.log(`publish time        ${publishSeconds.toFixed(2)} s  (read + encode + sign + store)`);
  const baseHeap = base.heapUsed + base.external + base.arrayBuffers;
  console.log(
    `peak memory         JS heap+buffers ${mb(peakHeap)} MiB (before: ${mb(baseHeap)} MiB, +${mb(peakHeap - baseHeap)}); process RSS ${mb(peakRss)} MiB (before: ${mb(base.rss)} MiB)`,
  );
} finally {
  await ctx.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (baseUrl && scratch) await dropDatabase(baseUrl, scratch);
}
