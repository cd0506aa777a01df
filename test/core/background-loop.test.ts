import { describe, expect, it } from 'vitest';

import { backoffDelay, startLoop } from '../../src/core/background-loop.ts';

function recordingLog() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    lines,
    info: (obj: object, msg: string) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj: object, msg: string) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('background loop', () => {
  it('backs off exponentially while runs fail, within bounds, and says when it resumes', async () => {
    const log = recordingLog();
    const starts: number[] = [];
    let failUntil = 5;
    const loop = startLoop({
      name: 'test loop',
      intervalMs: 20,
      minBackoffMs: 20,
      maxBackoffMs: 200,
      log,
      run: async () => {
        starts.push(Date.now());
        if (starts.length <= failUntil) throw new Error('database is down');
      },
    });
    await sleep(1_200);
    await loop.stop();
    failUntil = 0;
    const gaps = starts.slice(1, 6).map((t, i) => t - starts[i]!);
    // 20, 40, 80, 160, then capped at 200 (±20 % jitter).
    expect(gaps[0]).toBeGreaterThanOrEqual(14);
    expect(gaps[3]).toBeGreaterThanOrEqual(120);
    expect(gaps[4]).toBeLessThan(400);
    const warns = log.lines.filter((l) => l.level === 'warn');
    expect(warns).toHaveLength(5);
    expect(warns[0]).toMatchObject({
      msg: 'test loop failed; backing off',
      obj: { failures: 1, err: 'database is down' },
    });
    expect(log.lines.find((l) => l.level === 'info')).toMatchObject({
      msg: 'test loop resumed after 5 failed run(s)',
      obj: { failures: 5 },
    });
    // Healthy again: runs every interval.
    expect(starts.length).toBeGreaterThan(8);
  });

  it('runs again at once when a run reports more work, or when kicked; stop waits for the run', async () => {
    let runs = 0;
    let finished: boolean | undefined;
    const loop = startLoop({
      name: 'batch',
      intervalMs: 60_000,
      log: recordingLog(),
      run: async () => {
        runs++;
        await sleep(30);
        finished = true;
        return runs < 3;
      },
    });
    await sleep(300);
    expect(runs).toBe(3);
    loop.kick();
    await sleep(10);
    expect(runs).toBe(4);
    finished = false;
    await loop.stop();
    expect(finished).toBe(true);
    await sleep(100);
    expect(runs).toBe(4);
  });

  it('backoff delays double from the minimum up to the cap', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelay(n, 100, 1_000, mid))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });
});
