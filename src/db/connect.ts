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
  /**
   * For writes whose loss in a database crash is harmless or made good later (a spent nonce, a
   * pre-signed OCSP answer, a validation job's lease): its commits return before PostgreSQL flushes
   * them to disk (synchronous_commit off), so they cost no flush of their own. WAL is flushed in
   * order, so the next ordinary commit, or the WAL writer within a fraction of a second, makes
   * them durable too. Its prepared statements keep one plan, as `genericPlans`'. The embedded
   * database has one connection: there it is `db`.
   */
  asyncCommit: Db;
  /**
   * The same database on connections that plan a prepared statement once and reuse the plan for
   * any parameters (plan_cache_mode = force_generic_plan), for hot statements written so that one
   * plan fits every call. PostgreSQL otherwise plans newOrder's and the settle's statements on every
   * call, as long as their parameters' values make a custom plan look cheaper than the generic one:
   * planning them cost as much as running them. Not for statements that need a parameter's value to pick a
   * partial index. The embedded database has one connection: there it is `db`.
   */
  genericPlans: Db;
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
    const pool = newPool(options.url, options.poolSize ?? 10);
    // Its statements (nonce spends, OCSP answers) find rows by primary key: one plan fits all.
    const asyncPool = newPool(
      options.url,
      ASYNC_COMMIT_POOL_SIZE,
      '-c synchronous_commit=off -c plan_cache_mode=force_generic_plan',
    );
    // The hot path's group-committed writes (newOrder, the settle, the reservation with its audit
    // events, the record) hold one of these for their run and flush.
    const genericPool = newPool(
      options.url,
      Math.max(4, Math.ceil((options.poolSize ?? 10) / 2)),
      '-c plan_cache_mode=force_generic_plan',
    );
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new PreparedStatementPool(pool) }) });
    const asyncCommit = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new PreparedStatementPool(asyncPool, { flushes: false }) }),
    });
    const genericPlans = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new PreparedStatementPool(genericPool) }),
    });
    return {
      db,
      asyncCommit,
      genericPlans,
      kind: 'postgres',
      listen: listenPostgres(options.url),
      poolStats: () => ({
        total: pool.totalCount,
        idle: pool.idleCount,
        waiting: pool.waitingCount,
        max: pool.options.max,
      }),
      close: async () => {
        await Promise.all([db.destroy(), asyncCommit.destroy(), genericPlans.destroy()]);
      },
    };
  }
  const dir = join(options.dataDir, 'pg');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pglite = await PGlite.create(dir);
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return {
    db,
    asyncCommit: db,
    genericPlans: db,
    kind: 'embedded',
    listen: listenEmbedded(pglite),
    close: () => db.destroy(),
  };
}

/** Few: its statements are short and batched (nonce spends are group-committed). */
const ASYNC_COMMIT_POOL_SIZE = 4;

function newPool(url: string, max: number, options?: string): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    ...(options ? { options } : {}),
    // While the server is away a request fails (503) instead of queueing for a connection forever;
    // once it is back the pool opens new connections on demand (the dead ones were dropped).
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // A server that vanished without closing the socket (host down, network cut) is noticed.
    keepAlive: true,
  });
  pool.on('error', () => {
    // An idle client that dies is dropped by the pool; queries surface their own errors.
  });
  return pool;
}
