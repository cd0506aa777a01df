import { createHash } from 'node:crypto';

import type { PostgresCursor, PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import type pg from 'pg';

import { events } from '../core/events.ts';
import { ConnectionCounter } from './statement-stats.ts';

/** Distinct statements kept prepared; past this, new texts run unnamed (PostgreSQL keeps each per connection). */
const MAX_NAMED = 500;
// "cached plan must not change result type": a migration changed a table under a prepared `SELECT *`.
const PLAN_INVALIDATED = '0A000';

/**
 * Runs every parameterised query as a named prepared statement: PostgreSQL parses and plans it once
 * per connection instead of on every call, which was two thirds of its time per statement under
 * ACME load. Names are digests of the SQL text, so one name never means two statements.
 */
export class PreparedStatementPool implements PostgresPool {
  private readonly names = new Map<string, string>();

  constructor(
    private readonly pool: pg.Pool,
    /** False for a pool whose commits don't wait for the WAL flush (counted apart by benchmarks). */
    private readonly opts: { flushes: boolean } = { flushes: true },
  ) {}

  private nameFor(text: string): string | undefined {
    let name = this.names.get(text);
    if (name === undefined && this.names.size < MAX_NAMED) {
      name = `kw_${createHash('sha256').update(text).digest('base64url').slice(0, 24)}`;
      this.names.set(text, name);
    }
    return name;
  }

  async connect(): Promise<PostgresPoolClient> {
    // No idle connection left over for us (earlier requests may be about to take the idle ones) and
    // the pool at its size: this request queues for a connection (a pool wait).
    const queued = this.pool.idleCount - this.pool.waitingCount <= 0 && this.pool.totalCount >= this.pool.options.max;
    const started = queued ? performance.now() : 0;
    const client = await this.pool.connect();
    if (queued) events.poolWait.publish({ seconds: (performance.now() - started) / 1000 });
    let invalidated = false;
    // pg-pool listens for errors only on idle clients. A connection that dies while checked out
    // (pg_terminate_backend, a restart, a failover: FATAL 57P01) emits 'error' between queries;
    // without a listener that is an unhandled 'error' event and the process exits. The in-flight
    // query fails on its own; this only marks the connection to be dropped on release.
    let broken = false;
    const onError = () => {
      broken = true;
    };
    client.on('error', onError);
    const counter = new ConnectionCounter(this.opts.flushes);
    const query = async (text: string, values: ReadonlyArray<unknown>): Promise<PostgresQueryResult<unknown>> => {
      counter.count(text);
      const name = values.length > 0 ? this.nameFor(text) : undefined;
      try {
        return (await client.query(
          name ? { name, text, values: [...values] } : { text, values: [...values] },
        )) as PostgresQueryResult<unknown>;
      } catch (err) {
        // This connection's statements are stale; drop it rather than fail the same way again.
        if ((err as { code?: string }).code === PLAN_INVALIDATED) invalidated = true;
        throw err;
      }
    };
    return {
      query: ((textOrCursor: string | PostgresCursor<unknown>, values?: ReadonlyArray<unknown>) =>
        typeof textOrCursor === 'string'
          ? query(textOrCursor, values ?? [])
          : client.query(textOrCursor as never)) as PostgresPoolClient['query'],
      release: (destroy?: boolean) => {
        // Removed only after release, which puts pg-pool's idle listener back first: never a moment
        // without one. (A dropped client keeps pg-pool's listener for late errors.)
        client.release(destroy || invalidated || broken);
        client.removeListener('error', onError);
      },
    };
  }

  end(): Promise<void> {
    return this.pool.end();
  }
}
