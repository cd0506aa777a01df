import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import { type DatabaseHandle, openDatabase } from '../../src/db/connect.ts';

/** A digest of migrations/: the templates are rebuilt when it changes. */
export function migrationsDigest(): string {
  const dir = join(process.cwd(), 'migrations');
  const hash = createHash('sha256');
  for (const f of readdirSync(dir).sort()) hash.update(f).update(readFileSync(join(dir, f)));
  return hash.digest('hex');
}

// Starting PGlite costs ~1.5 s of CPU with PostgreSQL's defaults, most of it preparing 128 MB of
// shared buffers and 100 connection slots; a test database is small and has one connection, and
// with these every copy (a test store, a spawned `keyward`) starts in about a third of that.
export const PGLITE_TEST_SETTINGS = 'shared_buffers = 8MB\nmax_connections = 5\n';

/** Where built test templates are kept: outside the checkout, for every checkout of this user. */
export const TEMPLATE_CACHE = process.env.KEYWARD_TEST_CACHE ?? join(homedir(), '.cache', 'keyward-test');

/**
 * The migrated PGlite data directory every test database is copied from (the global setup builds
 * it). Creating one runs PGlite's initdb, ~6 s and ~9 s of CPU here, so it is kept where other
 * checkouts and fresh clones on this machine (CI's) find it, under a name made of what it is
 * made from (PGlite's version, the migrations, the settings above), as the PostgreSQL template
 * database is named after the migrations.
 */
export const TEMPLATE_DIR = join(
  TEMPLATE_CACHE,
  `pglite-template-${createHash('sha256')
    .update(`${pgliteVersion()}\n${migrationsDigest()}\n${PGLITE_TEST_SETTINGS}`)
    .digest('hex')
    .slice(0, 16)}`,
);

function pgliteVersion(): string {
  const manifest = join(process.cwd(), 'node_modules', '@electric-sql', 'pglite', 'package.json');
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

/**
 * The migrated PostgreSQL database every test database is copied from (the global setup builds
 * it): CREATE DATABASE … TEMPLATE costs a fraction of running the migrations. Named after the
 * migrations, so that runs of other checkouts on the same server share it or keep their own.
 */
export function templateDatabaseName(): string {
  return `kw_template_${migrationsDigest().slice(0, 16)}`;
}

/** Where a test's CA lives: a data directory, and a database URL when tests run on PostgreSQL. */
export interface TestStore {
  dataDir: string;
  databaseUrl: string | undefined;
  /** Environment for a child `keyward` process using this store. */
  env: Record<string, string>;
  open(): Promise<DatabaseHandle>;
  cleanup(): Promise<void>;
}

/** Creates a database on the server of `base` (empty, or a copy of `template`) and returns its URL. */
export async function createDatabase(base: string, name: string, template?: string): Promise<string> {
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}${template ? ` TEMPLATE ${template}` : ''}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops a database `createDatabase` made, even with connections still open. */
export async function dropDatabase(base: string, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/**
 * A copy of `source` (its database and data directory), which must be closed: CREATE DATABASE …
 * TEMPLATE on PostgreSQL, a file copy of the PGlite data directory.
 */
export async function copyTestStore(source: TestStore): Promise<TestStore> {
  const dataDir = mkdtempSync(join(tmpdir(), 'kw-test-'));
  cpSync(source.dataDir, dataDir, { recursive: true });
  const base = process.env.DATABASE_URL;
  let databaseUrl: string | undefined;
  if (base && source.databaseUrl) {
    const template = new URL(source.databaseUrl).pathname.slice(1);
    // The source's sessions end a moment after its pool closed: until then the copy is refused.
    for (let attempt = 0; ; attempt++) {
      try {
        databaseUrl = await createDatabase(base, `kw_${randomBytes(6).toString('hex')}`, template);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== '55006' || attempt === 100) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  return storeAt(dataDir, databaseUrl, base);
}

/**
 * A fresh, migrated database per call: a copy of a template built once by the global setup, a
 * PostgreSQL database when DATABASE_URL is set, else a PGlite data directory (creating and
 * migrating one costs seconds).
 */
export async function createTestStore(): Promise<TestStore> {
  const dataDir = mkdtempSync(join(tmpdir(), 'kw-test-'));
  const base = process.env.DATABASE_URL;
  let databaseUrl: string | undefined;
  if (base) {
    databaseUrl = await createDatabase(base, `kw_${randomBytes(6).toString('hex')}`, templateDatabaseName());
  } else {
    if (!existsSync(TEMPLATE_DIR)) throw new Error('the PGlite template is missing: the vitest global setup builds it');
    cpSync(TEMPLATE_DIR, join(dataDir, 'pg'), { recursive: true });
  }
  return storeAt(dataDir, databaseUrl, base);
}

function storeAt(dataDir: string, databaseUrl: string | undefined, base: string | undefined): TestStore {
  return {
    dataDir,
    databaseUrl,
    env: { KEYWARD_DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
    open: () => openDatabase({ url: databaseUrl, dataDir }),
    cleanup: async () => {
      rmSync(dataDir, { recursive: true, force: true });
      if (base && databaseUrl) await dropDatabase(base, new URL(databaseUrl).pathname.slice(1));
    },
  };
}
