import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import { openDatabase } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { freePort } from './ca.ts';
import { createDatabase, type TestStore } from './db.ts';

/**
 * A PostgreSQL server of the test's own (initdb in a temporary directory, run as user postgres on
 * a free port), so a test may kill its backends, stop and restart it without touching the shared
 * server on 5432.
 */
export interface ThrowawayCluster {
  url: string;
  port: number;
  /** A migrated, empty database on this server, as a TestStore. */
  store(): Promise<TestStore>;
  /** pg_terminate_backend for every client backend (what a DBA or failover does to sessions). */
  terminateBackends(): Promise<number>;
  /** Stops the server at once (`-m immediate`: like a crash, no checkpoint). */
  stop(): void;
  start(): void;
  destroy(): Promise<void>;
}

function asPostgres(cmd: string, args: string[]): string {
  return execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8', stdio: 'pipe' });
}

export async function startThrowawayCluster(): Promise<ThrowawayCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'kw-pgc-'));
  execFileSync('chown', ['postgres:postgres', dir]);
  const data = join(dir, 'data');
  const port = await freePort();
  asPostgres('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`;
  const start = () => asPostgres('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', 'start']);
  const stop = () => asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
  start();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const stores: TestStore[] = [];
  return {
    url,
    port,
    store: async () => {
      const dataDir = mkdtempSync(join(tmpdir(), 'kw-test-'));
      const databaseUrl = await createDatabase(url, `kw_${stores.length}`);
      const handle = await openDatabase({ url: databaseUrl, dataDir });
      await migrateToLatest(handle.db);
      await handle.close();
      const store: TestStore = {
        dataDir,
        databaseUrl,
        env: { KEYWARD_DATA_DIR: dataDir, DATABASE_URL: databaseUrl },
        open: () => openDatabase({ url: databaseUrl, dataDir }),
        cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
      };
      stores.push(store);
      return store;
    },
    terminateBackends: async () => {
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        const r = await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
        );
        return r.rowCount ?? 0;
      } finally {
        await admin.end();
      }
    },
    stop,
    start,
    destroy: async () => {
      try {
        stop();
      } catch {
        // already stopped
      }
      for (const s of stores) await s.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
