import { randomBytes } from 'node:crypto';

import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

import { listenPostgres, type NotificationHandler } from '../../src/db/notifications.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Records what a channel's handler heard, in order. */
function recorder(): NotificationHandler & { heard: string[] } {
  const heard: string[] = [];
  return {
    heard,
    message: (payload) => heard.push(`message:${payload}`),
    ready: () => heard.push('ready'),
    lost: () => heard.push('lost'),
  };
}

// PostgreSQL only: the embedded database delivers notifications in-process.
describe.runIf(process.env.DATABASE_URL)('LISTEN on PostgreSQL', () => {
  const url = process.env.DATABASE_URL!;
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  afterAll(() => admin.end());
  // Unique per run: other test files may listen in the same database.
  const tag = randomBytes(4).toString('hex');
  const [chA, chB] = [`kw_notify_a_${tag}`, `kw_notify_b_${tag}`];
  const notify = (channel: string, payload: string) => admin.query('SELECT pg_notify($1, $2)', [channel, payload]);
  /** Backends whose last statement named one of this run's channels: the listening connections. */
  const listeners = async () =>
    (
      await admin.query<{ pid: number; application_name: string }>(
        `SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database() AND query LIKE $1`,
        [`%LISTEN kw_notify_%_${tag}`],
      )
    ).rows;

  it('one connection carries every channel, and each handler hears losing it and getting it back', async () => {
    const listen = listenPostgres(url);
    const a = recorder();
    const b = recorder();
    // Concurrently, as a server's caches start: the two LISTENs take turns on the one connection.
    const [stopA, stopB] = await Promise.all([listen(chA, a), listen(chB, b)]);
    expect([a.heard, b.heard]).toEqual([['ready'], ['ready']]);

    const conns = await listeners();
    expect(conns).toHaveLength(1);
    expect(conns[0]!.application_name).toBe('keyward-listen');

    await notify(chA, 'one');
    await notify(chB, 'two');
    await waitFor('both messages', () => a.heard.length === 2 && b.heard.length === 2);
    expect([a.heard, b.heard]).toEqual([
      ['ready', 'message:one'],
      ['ready', 'message:two'],
    ]);

    // The connection is cut: both channels hear it, and both are listened to again on the next one.
    await admin.query('SELECT pg_terminate_backend($1)', [conns[0]!.pid]);
    await waitFor(
      'lost and ready again',
      () => a.heard.at(-1) === 'ready' && b.heard.at(-1) === 'ready' && a.heard.length > 2,
    );
    expect(a.heard.slice(2)).toEqual(['lost', 'ready']);
    expect(b.heard.slice(2)).toEqual(['lost', 'ready']);
    await notify(chA, 'three');
    await notify(chB, 'four');
    await waitFor('messages after reconnecting', () => a.heard.length === 5 && b.heard.length === 5);
    expect([a.heard.at(-1), b.heard.at(-1)]).toEqual(['message:three', 'message:four']);

    // One channel stopped: the other still hears its messages on the same connection.
    await stopA();
    await notify(chA, 'not heard');
    await notify(chB, 'five');
    await waitFor('the message on the channel still followed', () => b.heard.length === 6);
    expect(b.heard.at(-1)).toBe('message:five');
    expect(a.heard).toHaveLength(5);
    expect(await listeners()).toHaveLength(1);

    // The last one stopped: the connection closes.
    await stopB();
    await waitFor('the listening connection to close', async () => (await listeners()).length === 0);
  });

  it('a failed first LISTEN is an error for the caller and leaves nothing running', async () => {
    const listen = listenPostgres(url.replace(/\/[^/?]+(\?|$)/, '/kw_no_such_database$1'));
    const a = recorder();
    await expect(listen(chA, a)).rejects.toThrow(/kw_no_such_database/);
    expect(a.heard).not.toContain('ready');
  });
});
