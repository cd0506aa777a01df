// @peculiar/x509 needs the Reflect metadata API before it is first imported.
import 'reflect-metadata';

import {
  createHash,
  createPublicKey,
  createSecretKey,
  generateKeyPairSync,
  randomBytes,
  randomUUID,
} from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import { open, PURPOSE, seal } from '../src/kms/container.ts';
import { DataKeys } from '../src/kms/data-keys.ts';
import { CA_KEK, dekContext } from '../src/kms/hierarchy.ts';
import { rewrap } from '../src/kms/rewrap.ts';
import { rotateKek } from '../src/kms/rotation.ts';
import { createDatabase, dropDatabase } from '../test/support/db.ts';
import { formatTable, measure, type Measurement } from './measure.ts';

// bench:kms — unwrap and data-key operations per second, and the time to rewrap N DEKs
// (default 100,000; BENCH_DEKS to change). Uses a fresh PostgreSQL database when DATABASE_URL
// is set, else an embedded PGlite in a temporary directory.

const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const dekCount = Number(process.env.BENCH_DEKS ?? 100_000);
const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-kms-'));
let databaseUrl: string | undefined;
const base = process.env.DATABASE_URL;
const dbName = `kw_bench_${randomBytes(4).toString('hex')}`;
if (base) databaseUrl = await createDatabase(base, dbName);
const config = loadConfig({ dataDir, env: databaseUrl ? { DATABASE_URL: databaseUrl } : {} });
const ctx = await openContext({ ...config, log: { level: 'silent' } });
const db = ctx.database.db;
const kind = ctx.database.kind === 'embedded' ? 'PGlite' : 'PostgreSQL';
const rows: Measurement[] = [];

try {
  // Level 2 unwrap in memory: a DEK under a KEK version (AES-256-GCM with an HKDF subkey).
  const kek = await ctx.kms.primaryKek(db, CA_KEK);
  const keyId = randomUUID();
  const dek = randomBytes(32);
  const dekBlob = seal(
    kek.key,
    { purpose: PURPOSE.dek, keyId: kek.id, version: kek.version },
    dekContext(keyId, 'intermediate'),
    dek,
  );
  rows.push(
    await measure(
      'DEK unwrap (in memory)',
      () =>
        open(
          kek.key,
          dekBlob,
          { purpose: PURPOSE.dek, keyId: kek.id, version: kek.version },
          dekContext(keyId, 'intermediate'),
        ),
      { seconds },
    ),
  );

  // Full CA-key unwrap: row read, DEK and PKCS#8 decrypt, SPKI check, audit event.
  const ca = await ctx.kms.createKey(db, { usage: 'intermediate', alg: 'ecdsa-p256', principal: 'bench' });
  rows.push(
    await measure(
      `CA key unwrap from ${kind} (audited)`,
      async () => {
        ctx.kms.forget(ca.id);
        await ctx.kms.publicKey(ca.id, 'bench');
      },
      { seconds },
    ),
  );

  const dataKeys = new DataKeys(ctx.kms, db);
  await dataKeys.createKey('bench', ['bench'], 'bench');
  const ec = { app: 'bench', table: 't1' };
  const blob = (await dataKeys.encrypt({ keyId: 'bench', plaintext: randomBytes(256), encryptionContext: ec }, 'bench'))
    .ciphertextBlob;
  for (const concurrency of [1, 8]) {
    rows.push(
      await measure(
        `generate-data-key (${kind}, ${concurrency} concurrent)`,
        () => dataKeys.generateDataKey({ keyId: 'bench', encryptionContext: ec }, 'bench'),
        { seconds, concurrency },
      ),
    );
    rows.push(
      await measure(
        `encrypt 256 B (${kind}, ${concurrency} concurrent)`,
        () => dataKeys.encrypt({ keyId: 'bench', plaintext: randomBytes(256), encryptionContext: ec }, 'bench'),
        { seconds, concurrency },
      ),
    );
    rows.push(
      await measure(
        `decrypt 256 B (${kind}, ${concurrency} concurrent)`,
        () => dataKeys.decrypt({ ciphertextBlob: blob, encryptionContext: ec }, 'bench'),
        { seconds, concurrency },
      ),
    );
  }
  console.log(`KMS operations; ${seconds} s per row; node ${process.version}; ${kind}\n`);
  console.log(formatTable(rows));

  // Rewrap: N real envelope-encrypted keys under version 1 (one key pair, re-sealed per row so
  // every row is a valid, distinct DEK + ciphertext bound to its own id), then rotate and rewrap.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const spkiSha256 = createHash('sha256')
    .update(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }))
    .digest();
  const fillStart = performance.now();
  for (let done = 0; done < dekCount;) {
    const batch = [];
    for (let i = 0; i < 1000 && done < dekCount; i++, done++) {
      const id = randomUUID();
      const d = randomBytes(32);
      batch.push({
        id,
        usage: 'provisioner' as const,
        alg: 'ecdsa-p256',
        spki_sha256: spkiSha256,
        policy: null,
        kek_id: kek.id,
        kek_version: kek.version,
        dek_wrapped: seal(
          kek.key,
          { purpose: PURPOSE.dek, keyId: kek.id, version: kek.version },
          dekContext(id, 'provisioner'),
          d,
        ),
        key_ciphertext: seal(
          createSecretKey(d),
          { purpose: PURPOSE.privateKey, keyId: id, version: 1 },
          { 'kw:purpose': 'private-key', 'kw:key': id, 'kw:alg': 'ecdsa-p256', 'kw:spki': spkiSha256.toString('hex') },
          pkcs8,
        ),
        external_ref: null,
        deletion_at: null,
        destroyed_at: null,
      });
    }
    await db.insertInto('kms_keys').values(batch).execute();
  }
  const fillSeconds = (performance.now() - fillStart) / 1000;
  await rotateKek(ctx.kms, db, CA_KEK, 'bench');
  const start = performance.now();
  const result = await rewrap(ctx.kms, db, { principal: 'bench' });
  const rewrapSeconds = (performance.now() - start) / 1000;
  console.log(
    `\nrewrap: ${result.rewrapped} DEKs moved to version ${result.primaryVersion} in ${rewrapSeconds.toFixed(1)} s ` +
      `(${Math.round(result.rewrapped / rewrapSeconds)} DEKs/s, batches of 500, ${kind}); fixture insert took ${fillSeconds.toFixed(1)} s`,
  );
  // A spot check that rewrapped rows still open end to end.
  ctx.kms.forget(ca.id);
  await ctx.kms.publicKey(ca.id, 'bench');
} finally {
  await ctx.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (base) await dropDatabase(base, dbName);
}
