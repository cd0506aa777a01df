import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type DatabaseHandle, openDatabase } from '../../src/db/connect.ts';
import { createTestStore, type TestStore } from '../support/db.ts';

// Prepared statements are a PostgreSQL path; PGlite runs in-process and needs none.
describe.runIf(process.env.DATABASE_URL)('queries on PostgreSQL run as prepared statements', () => {
  let store: TestStore;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    store = await createTestStore();
    handle = await openDatabase({ url: store.databaseUrl, dataDir: store.dataDir, poolSize: 1 });
    await sql`CREATE TABLE widgets (id int PRIMARY KEY, name text)`.execute(handle.db);
    await sql`INSERT INTO widgets VALUES (1, 'one'), (2, 'two')`.execute(handle.db);
  });
  afterAll(async () => {
    await handle?.close();
    await store?.cleanup();
  });

  const byId = (id: number) => sql<Record<string, unknown>>`SELECT * FROM widgets WHERE id = ${id}`.execute(handle.db);

  it('are prepared once per connection and answer with each call’s own parameters', async () => {
    expect((await byId(1)).rows).toEqual([{ id: 1, name: 'one' }]);
    expect((await byId(2)).rows).toEqual([{ id: 2, name: 'two' }]);
    const { rows } = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE '%FROM widgets WHERE id%'`.execute(
      handle.db,
    );
    expect(rows[0]!.n).toBe(1);
  });

  it('keep working after a migration changes a table under a prepared statement', async () => {
    await byId(1);
    // Another replica migrates: the prepared `SELECT *` would now return a different row type.
    const other = new pg.Client({ connectionString: store.databaseUrl });
    await other.connect();
    await other.query('ALTER TABLE widgets ADD COLUMN colour text');
    await other.end();
    // PostgreSQL refuses the stale plan once; the connection is dropped, and the next call works.
    await byId(1).catch((err: { code?: string }) => expect(err.code).toBe('0A000'));
    expect((await byId(1)).rows).toEqual([{ id: 1, name: 'one', colour: null }]);
  });

  it('commit ordinary writes after the WAL flush, and the asyncCommit connection’s without waiting for it', async () => {
    const setting = async (db: typeof handle.db) =>
      (await sql<{ s: string }>`SELECT current_setting('synchronous_commit') AS s`.execute(db)).rows[0]!.s;
    expect(await setting(handle.db)).toBe('on');
    expect(await setting(handle.asyncCommit)).toBe('off');
    // Same database: a write there is seen by the ordinary connection.
    await sql`INSERT INTO widgets VALUES (3, 'three')`.execute(handle.asyncCommit);
    expect((await byId(3)).rows).toEqual([{ id: 3, name: 'three', colour: null }]);
  });

  it('plan a statement once on the genericPlans connections, and choose per call on the ordinary ones', async () => {
    const mode = async (db: typeof handle.db) =>
      (await sql<{ m: string }>`SELECT current_setting('plan_cache_mode') AS m`.execute(db)).rows[0]!.m;
    expect(await mode(handle.db)).toBe('auto');
    expect(await mode(handle.genericPlans)).toBe('force_generic_plan');
    const ids = (db: typeof handle.db, list: number[]) =>
      sql<{ name: string }>`SELECT name FROM widgets WHERE id = ANY (${list}::int[]) ORDER BY id`.execute(db);
    expect((await ids(handle.genericPlans, [1, 3])).rows).toEqual([{ name: 'one' }, { name: 'three' }]);
    expect((await ids(handle.genericPlans, [2])).rows).toEqual([{ name: 'two' }]);
  });
});
