import { type OperationNodeSource, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DatabaseHandle } from '../../src/db/connect.ts';
import { type Part, precompiled, precompiledByParts } from '../../src/db/precompiled.ts';
import type { Executor } from '../../src/db/schema.ts';
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

// Parts of another module's statement (as the audit append's attached writers): the statement is
// compiled once per list of part keys, each built from stand-ins for its values.
interface Shape {
  build(db: Executor, standIns: unknown[]): OperationNodeSource;
}
const named: Shape = {
  build: (db, [name]) =>
    db
      .selectFrom('leases')
      .select('name')
      .where('name', '=', name as string),
};
const heldByPart: Shape = {
  build: (db, [holder]) =>
    db
      .selectFrom('leases')
      .select('name')
      .where('holder', '=', holder as string)
      .where('holder', '<>', 'nobody'),
};
const anyOf: Shape = {
  build: (db, names) =>
    db
      .selectFrom('leases')
      .select('name')
      .where('name', 'in', names as string[]),
};
const union = precompiledByParts<Shape, [string], { name: string }>((db, [first, ...rest], extra) =>
  sql<{ name: string }>`SELECT name FROM (${first!.key.build(db, first!.standIns)}) f
    ${sql.join(
      rest.map((r, i) => sql`UNION SELECT name FROM (${r.key.build(db, r.standIns)}) ${sql.id(`r${i}`)}`),
      sql` `,
    )}
    UNION SELECT ${extra}::text ORDER BY 1`.compile(db),
);
const part = (key: Shape, ...values: unknown[]): Part<Shape> => ({ key, values });

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

  it('compiles a statement once per list of part keys, each run with its own values', async () => {
    // After the tests above: a, b and c are alice's.
    expect(await union(database.db, [part(named, 'b'), part(heldByPart, 'bob')], 'x')).toEqual([
      { name: 'b' },
      { name: 'x' },
    ]);
    expect(await union(database.db, [part(heldByPart, 'alice'), part(named, 'zz')], 'y')).toEqual([
      { name: 'a' },
      { name: 'b' },
      { name: 'c' },
      { name: 'y' },
    ]);
    expect(await union(database.db, [part(named, 'a'), part(heldByPart, 'alice'), part(named, 'c')], 'z')).toEqual([
      { name: 'a' },
      { name: 'b' },
      { name: 'c' },
      { name: 'z' },
    ]);
    expect(await union(database.db, [part(named, 'c'), part(heldByPart, 'carol')], 'w')).toEqual([
      { name: 'c' },
      { name: 'w' },
    ]);
    // A part's values are laid out by its first run: another count is refused, not shifted.
    expect(await union(database.db, [part(anyOf, 'a', 'b')], 'v')).toEqual([
      { name: 'a' },
      { name: 'b' },
      { name: 'v' },
    ]);
    await expect(union(database.db, [part(anyOf, 'a', 'b', 'c')], 'v')).rejects.toThrow('given 3 values, not 2');
  });
});
