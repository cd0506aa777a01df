import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DatabaseHandle } from '../../src/db/connect.ts';
import { precompiled } from '../../src/db/precompiled.ts';
import { createTestStore, type TestStore } from '../support/db.ts';

// Raw SQL with a value used twice and a constant; a builder query on one of the schema's tables.
const heldBy = precompiled((db, holder: string, from: Date) =>
  sql<{ name: string }>`SELECT name FROM leases
    WHERE holder = ${holder} AND expires_at >= ${from} AND expires_at < ${from}::timestamptz + interval '1 day'
    AND name <> ${'never'} ORDER BY name`.compile(db),
);
const takeOver = precompiled((db, name: string, holder: string) =>
  db
    .updateTable('leases')
    .set({ holder })
    .where('name', '=', name)
    .where('holder', '<>', 'nobody')
    .returning(['name', 'holder'])
    .compile(),
);

describe('precompiled statements', () => {
  let store: TestStore;
  let database: DatabaseHandle;
  const day = new Date('2030-01-01T00:00:00Z');
  beforeAll(async () => {
    store = await createTestStore();
    database = await store.open();
    await database.db
      .insertInto('leases')
      .values([
        { name: 'a', holder: 'alice', expires_at: day },
        { name: 'b', holder: 'alice', expires_at: new Date('2030-01-03T00:00:00Z') },
        { name: 'c', holder: 'bob', expires_at: day },
      ])
      .execute();
  });
  afterAll(async () => {
    await database?.close();
    await store?.cleanup();
  });

  it('sends each run its own values in the text compiled once, constants as compiled', async () => {
    expect(await heldBy(database.db, 'alice', day)).toEqual([{ name: 'a' }]);
    expect(await heldBy(database.db, 'bob', day)).toEqual([{ name: 'c' }]);
    expect(await heldBy(database.db, 'alice', new Date('2030-01-03T00:00:00Z'))).toEqual([{ name: 'b' }]);
    expect(await takeOver(database.db, 'c', 'alice')).toEqual([{ name: 'c', holder: 'alice' }]);
    expect(await takeOver(database.db, 'zz', 'alice')).toEqual([]);
    expect(await heldBy(database.db, 'alice', day)).toEqual([{ name: 'a' }, { name: 'c' }]);
  });

  it('joins the caller’s transaction', async () => {
    await expect(
      database.db.transaction().execute(async (trx) => {
        expect(await takeOver(trx, 'a', 'carol')).toEqual([{ name: 'a', holder: 'carol' }]);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await heldBy(database.db, 'carol', day)).toEqual([]);
    expect(await heldBy(database.db, 'alice', day)).toEqual([{ name: 'a' }, { name: 'c' }]);
  });
});
