import { describe, expect, it } from 'vitest';

import { GroupCommit } from '../../src/db/group-commit.ts';

describe('group commit', () => {
  it('sends the calls of one turn of the event loop together, and those made while it runs in the next batch', async () => {
    const batches: number[][] = [];
    let release: () => void = () => {};
    const group = new GroupCommit<number, number>(async (items) => {
      batches.push(items);
      if (batches.length === 1) await new Promise<void>((r) => (release = r));
      return items.map((i) => i * 10);
    });
    const first = [1, 2, 3].map((i) => group.submit(i));
    await new Promise((r) => setImmediate(r));
    const later = [4, 5].map((i) => group.submit(i));
    release();
    expect(await Promise.all([...first, ...later])).toEqual([10, 20, 30, 40, 50]);
    expect(batches).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
  });

  it('fails only the calls of the batch whose statement failed', async () => {
    const group = new GroupCommit<number, number>(async (items) => {
      if (items.includes(1)) throw new Error('statement failed');
      return items;
    });
    const failed = group.submit(1);
    await expect(failed).rejects.toThrow('statement failed');
    await expect(group.submit(2)).resolves.toBe(2);
  });
});
