import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';

import { type Listen, listenEmbedded, listenPostgres } from './notifications.ts';
import { PreparedStatementPool } from './prepared-statements.ts';
import type { Database, Db } from './schema.ts';

export interface DatabaseHandle {
  db: Db;
  kind: 'postgres' | 'embedded';
  /** NOTIFY messages on a channel, for caches every replica must drop at once (e.g. on revocation). */
  listen: Listen;
  /** Connections of the PostgreSQL pool (the embedded database has one, in-process). */
  poolStats?(): { total: number; idle: number; waiting: number; max: number };
  close(): Promise<void>;
}

/** How long a request waits for a new connection to PostgreSQL before it fails with a 503. */
const CONNECT_TIMEOUT_MS = 5_000;

// bytea as Uint8Array, int8 as string: pg's defaults already do that, PGlite's too (bigint for int8).
export async function openDatabase(options: {
  url?: string;
  dataDir: string;
  poolSize?: number;
}): Promise<DatabaseHandle> {
  if (options.url) {
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      // While the server is away a request fails (503) instead of queueing for a connection forever;
      // once it is back the pool opens new connections on demand (the dead ones were dropped).
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      // A server that vanished without closing the socket (host down, network cut) is noticed.
      keepAlive: true,
    });
    pool.on('error', () => {
      // An idle client that dies is dropped by the pool; queries surface their own errors.
    });
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new PreparedStatementPool(pool) }) });
    return {
      db,
      kind: 'postgres',
      listen: listenPostgres(options.url),
      poolStats: () => ({
        total: pool.totalCount,
        idle: pool.idleCount,
        waiting: pool.waitingCount,
        max: pool.options.max,
      }),
      close: () => db.destroy(),
    };
  }
  const dir = join(options.dataDir, 'pg');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pglite = await PGlite.create(dir);
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return { db, kind: 'embedded', listen: listenEmbedded(pglite), close: () => db.destroy() };
}
