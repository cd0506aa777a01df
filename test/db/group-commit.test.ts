import { describe, expect, it } from 'vitest';

import { GroupCommit } from '../../src/db/group-commit.ts';

/** A group that answers each item with itself and keeps its batches. */
function recording(delayMs: number) {
  const batches: number[][] = [];
  const group = new GroupCommit<number, number>(
    async (items) => {
      batches.push(items);
      return items;
    },
    500,
    delayMs,
  );
  return { group, batches };
}

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

  it('waits for company once callers arrive together, and stops waiting when they take turns', async () => {
    const { group, batches } = recording(1_000);
    // Callers taking turns: each goes on the next turn, alone.
    await group.submit(1);
    await group.submit(2);
    // Two together: the next batch waits for company.
    await Promise.all([group.submit(3), group.submit(4)]);
    // Alone for the whole wait: it goes alone, and the caller after it at once.
    await group.submit(5);
    const started = performance.now();
    await group.submit(6);
    expect(performance.now() - started).toBeLessThan(500);
    expect(batches).toEqual([[1], [2], [3, 4], [5], [6]]);
  });

  it('stops waiting once as many callers as came together last time are in', async () => {
    // A wait longer than the test's time-out: only company ends it.
    const { group, batches } = recording(60_000);
    await Promise.all([group.submit(1), group.submit(2)]);
    const waiting = group.submit(3);
    await new Promise((r) => setTimeout(r, 20));
    await Promise.all([waiting, group.submit(4)]);
    expect(batches).toEqual([
      [1, 2],
      [3, 4],
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
