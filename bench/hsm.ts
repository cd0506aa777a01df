// @peculiar/x509 needs the Reflect metadata API before it is first imported.
import 'reflect-metadata';

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import type { AsymmetricAlg } from '../src/kms/key-types.ts';
import { generateKeyPair } from '../src/kms/key-types.ts';
import { pinFromFile } from '../src/kms/pkcs11/module.ts';
import { sessionPool } from '../src/kms/pkcs11/session-pool.ts';
import { generateTokenKey, tokenSign } from '../src/kms/pkcs11/token-keys.ts';
import { signatureAlgorithmFor, signWithKeyObject } from '../src/kms/signer.ts';
import { createDatabase, dropDatabase } from '../test/support/db.ts';
import { formatTable, measure, type Measurement } from './measure.ts';

// bench:hsm — signatures per second through SoftHSM2 (PKCS#11, the session pool, C_SignAsync on
// libuv's threads) against the wrapped path (a key unwrapped into process memory), for the raw
// operation and for the audited Signer the CA uses (state and policy read, audit event written,
// one transaction per signature). BENCH_SECONDS per row (default 2); PostgreSQL when DATABASE_URL
// is set, else PGlite. A throwaway SoftHSM2 token is made in a temporary directory.

const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const sessions = Number(process.env.BENCH_SESSIONS ?? 4);
const dir = mkdtempSync(join(tmpdir(), 'kw-bench-hsm-'));
mkdirSync(join(dir, 'tokens'));
writeFileSync(
  join(dir, 'softhsm2.conf'),
  `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
);
process.env.SOFTHSM2_CONF = join(dir, 'softhsm2.conf');
execFileSync(
  'softhsm2-util',
  ['--init-token', '--free', '--label', 'bench', '--so-pin', '12345678', '--pin', '87654321'],
  {
    stdio: 'pipe',
  },
);
writeFileSync(join(dir, 'pin'), '87654321\n', { mode: 0o600 });
const module = '/usr/lib/softhsm/libsofthsm2.so';

const base = process.env.DATABASE_URL;
const dbName = `kw_bench_${Date.now().toString(36)}`;
const databaseUrl = base ? await createDatabase(base, dbName) : undefined;
const config = loadConfig({ dataDir: dir, env: databaseUrl ? { DATABASE_URL: databaseUrl } : {} });
const ctx = await openContext({
  ...config,
  kms: { ...config.kms, hsm: { module, token: 'bench', pinFile: join(dir, 'pin'), sessions } },
});
const db = ctx.database.db;
const kind = ctx.database.kind === 'embedded' ? 'PGlite' : 'PostgreSQL';
const pool = sessionPool({ module, token: 'bench', pin: pinFromFile(join(dir, 'pin'), 'bench') }, sessions);
const tbs = new Uint8Array(900); // about the size of a leaf TBSCertificate
const rows: Measurement[] = [];

try {
  const algs: AsymmetricAlg[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072'];
  for (const alg of algs) {
    const soft = generateKeyPair(alg).privateKey;
    const softAlg = signatureAlgorithmFor(soft);
    rows.push(await measure(`${alg} wrapped, in memory`, () => signWithKeyObject(soft, softAlg, tbs), { seconds }));
    const made = await generateTokenKey(pool, crypto.randomUUID(), alg);
    for (const concurrency of [1, sessions]) {
      rows.push(
        await measure(`${alg} SoftHSM2, ${concurrency} at once`, () => tokenSign(pool, made.ref, softAlg, tbs), {
          seconds,
          concurrency,
        }),
      );
    }
  }
  // The whole audited path the CA takes for each certificate, on both protections.
  for (const protection of ['wrapped', 'hsm'] as const) {
    const key = await ctx.kms.createKey(db, {
      usage: 'intermediate',
      alg: 'ecdsa-p256',
      principal: 'bench',
      protection,
    });
    const signer = await ctx.kms.signer(key.id, 'sign-certificate', 'bench');
    for (const concurrency of [1, sessions])
      rows.push(
        await measure(
          `ecdsa-p256 ${protection}, audited Signer (${kind}), ${concurrency} at once`,
          () => signer.sign(tbs, { purpose: 'bench' }),
          { seconds, concurrency },
        ),
      );
  }
  console.log(
    `Signatures per second; ${seconds} s per row; ${sessions} PKCS#11 sessions; node ${process.version}; SoftHSM2 ${execFileSync('softhsm2-util', ['--version'], { encoding: 'utf8' }).trim()}\n`,
  );
  console.log(formatTable(rows));
} finally {
  pool.close();
  await ctx.close();
  rmSync(dir, { recursive: true, force: true });
  if (base) await dropDatabase(base, dbName);
}
