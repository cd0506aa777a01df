import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import pg from 'pg';

import { openDatabase } from '../src/db/connect.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { migrationsDigest, TEMPLATE_DIR, templateDatabaseName } from './support/db.ts';

// Compiles src/ to dist/ when the sources changed, so that tests which spawn `keyward` run the
// current code (bin/keyward.mjs runs dist/); and builds the one migrated database that every test
// copies (a PostgreSQL template database, or a PGlite data directory), rebuilt when migrations
// change.
export default async function setup(): Promise<void> {
  execFileSync(process.execPath, [join(process.cwd(), 'bin', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  const base = process.env.DATABASE_URL;
  if (base) await buildPostgresTemplate(base);
  else await buildPgliteTemplate();
}

// Starting PGlite costs ~1.5 s of CPU with PostgreSQL's defaults, most of it preparing 128 MB of
// shared buffers and 100 connection slots; a test database is small and has one connection, and
// with these every copy (a test store, a spawned `keyward`) starts in about a third of that.
const PGLITE_TEST_SETTINGS = 'shared_buffers = 8MB\nmax_connections = 5\n';

async function buildPgliteTemplate(): Promise<void> {
  const digest = `${migrationsDigest()}\n${PGLITE_TEST_SETTINGS}`;
  const stamp = `${TEMPLATE_DIR}.sha256`;
  if (existsSync(TEMPLATE_DIR) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return;
  const building = `${TEMPLATE_DIR}.building-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true });
  const handle = await openDatabase({ dataDir: building });
  await migrateToLatest(handle.db);
  await handle.close();
  appendFileSync(join(building, 'pg', 'postgresql.conf'), PGLITE_TEST_SETTINGS);
  rmSync(TEMPLATE_DIR, { recursive: true, force: true });
  renameSync(join(building, 'pg'), TEMPLATE_DIR);
  rmSync(building, { recursive: true, force: true });
  writeFileSync(stamp, digest);
}

async function buildPostgresTemplate(base: string): Promise<void> {
  const name = templateDatabaseName();
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount) return;
    // Built under a name of its own, then renamed: a run on another checkout that builds the same
    // template at the same moment never copies a half-migrated one.
    const building = `kw_building_${process.pid}`;
    await admin.query(`DROP DATABASE IF EXISTS ${building}`);
    await admin.query(`CREATE DATABASE ${building}`);
    const url = new URL(base);
    url.pathname = `/${building}`;
    const handle = await openDatabase({ url: url.toString(), dataDir: process.cwd() });
    try {
      await migrateToLatest(handle.db);
    } finally {
      await handle.close();
    }
    try {
      await admin.query(`ALTER DATABASE ${building} RENAME TO ${name}`);
    } catch (err) {
      await admin.query(`DROP DATABASE IF EXISTS ${building}`);
      if ((err as { code?: string }).code !== '42P04') throw err; // another run renamed its copy first
    }
  } finally {
    await admin.end();
  }
}
