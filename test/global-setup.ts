import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
  utimesSync,
} from 'node:fs';
import { join } from 'node:path';

import pg from 'pg';

import { openDatabase } from '../src/db/connect.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { PGLITE_TEST_SETTINGS, TEMPLATE_CACHE, TEMPLATE_DIR, templateDatabaseName } from './support/db.ts';

// Compiles src/ to dist/ when the sources changed, so that tests which spawn `keyward` run the
// current code (bin/keyward.mjs runs dist/); builds the one migrated database that every test
// copies (a PostgreSQL template database, or a PGlite data directory), rebuilt when migrations
// change; and points the temporary directory at memory for the run.
export default async function setup(): Promise<() => void> {
  execFileSync(process.execPath, [join(process.cwd(), 'bin', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  const base = process.env.DATABASE_URL;
  if (base) await buildPostgresTemplate(base);
  else await buildPgliteTemplate();
  return useMemoryTmpdir();
}

const SHM = '/dev/shm';
/** Room for a run's files: a full embedded run peaked at ~120 MB here (PGlite directories ~40 MB each). */
const MIN_SHM_BYTES = 512 * 1024 ** 2;

/**
 * What the tests write (PGlite data directories and their copies, CA files, openssl's) goes to a
 * directory of this run on tmpfs when the machine has one: the embedded database's fsyncs then
 * wait for no disk, and copying a 39 MB data directory writes none (measured: a copy, a start and
 * 300 commits take half the wall time and two thirds of the system time of the same on /tmp).
 * TMPDIR is set before vitest starts its workers, so os.tmpdir() there is this directory; it is
 * removed when the run ends, with whatever a test left in it. KEYWARD_TEST_TMPDIR=disk keeps the
 * system's.
 */
function useMemoryTmpdir(): () => void {
  if (process.env.KEYWARD_TEST_TMPDIR === 'disk' || !existsSync(SHM)) return () => undefined;
  // A small tmpfs (a container's default /dev/shm is 64 MiB) would fill up: the disk it is then.
  const { bavail, bsize } = statfsSync(SHM);
  if (bavail * bsize < MIN_SHM_BYTES) return () => undefined;
  // A run that was killed left its directory (memory): removed once its process is gone.
  for (const name of readdirSync(SHM)) {
    const pid = /^keyward-test-(\d+)$/.exec(name)?.[1];
    if (pid && !alive(Number(pid))) rmSync(join(SHM, name), { recursive: true, force: true });
  }
  const dir = join(SHM, `keyward-test-${process.pid}`);
  try {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o1777); // as /tmp: a throwaway PostgreSQL cluster runs there as postgres
  } catch {
    return () => undefined; // not writable here: the system's temporary directory it is
  }
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(dir, { recursive: true, force: true });
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function buildPgliteTemplate(): Promise<void> {
  if (existsSync(TEMPLATE_DIR)) {
    // Complete (it only appears by the rename below); in use, so not pruned by another checkout.
    utimesSync(TEMPLATE_DIR, new Date(), new Date());
    return;
  }
  mkdirSync(TEMPLATE_CACHE, { recursive: true });
  // Built under a name of its own, then renamed: a run that builds the same template at the same
  // moment never copies a half-built one.
  const building = `${TEMPLATE_DIR}.building-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true });
  const handle = await openDatabase({ dataDir: building });
  await migrateToLatest(handle.db);
  await handle.close();
  appendFileSync(join(building, 'pg', 'postgresql.conf'), PGLITE_TEST_SETTINGS);
  try {
    renameSync(join(building, 'pg'), TEMPLATE_DIR);
  } catch (err) {
    // Another run renamed its copy first.
    if (!existsSync(TEMPLATE_DIR)) throw err;
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  // Templates of other migrations or PGlite versions, not used for a week, and the one that
  // checkouts kept in .tmp/ before the cache.
  for (const name of readdirSync(TEMPLATE_CACHE)) {
    const path = join(TEMPLATE_CACHE, name);
    if (path !== TEMPLATE_DIR && Date.now() - statSync(path).mtimeMs > 7 * 86_400_000)
      rmSync(path, { recursive: true, force: true });
  }
  for (const old of ['pglite-template', 'pglite-template.sha256'])
    rmSync(join(process.cwd(), '.tmp', old), { recursive: true, force: true });
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
