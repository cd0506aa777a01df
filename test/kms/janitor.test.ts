import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestCa, type TestCa } from '../support/ca.ts';
import { kmsCli } from './helpers.ts';

async function until<T>(fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}

// The janitor as `keyward serve` runs it: under a lease, on a timer.
describe('kms janitor in a running server', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ settings: { kms: { janitorInterval: '1s', checkpointEveryEvents: 5 } } });
  });
  afterAll(async () => {
    await ca.close();
  });

  it('signs checkpoints and destroys keys whose window has passed', async () => {
    const db = ca.ctx.database.db;
    const cp = await until(
      async () => (await db.selectFrom('audit_checkpoints').select('seq').executeTakeFirst()) ?? undefined,
    );
    expect(Number(cp.seq)).toBeGreaterThan(0);
    const key = await ca.ctx.kms.createKey(db, { usage: 'provisioner', alg: 'ecdsa-p256', principal: 'test' });
    await kmsCli(ca.ctx, ['kms', 'schedule-deletion'], { days: '7' }, [key.id]);
    await sql`UPDATE kms_keys SET deletion_at = now() WHERE id = ${key.id}`.execute(db);
    const row = await until(async () => {
      const r = await db
        .selectFrom('kms_keys')
        .select(['state', 'key_ciphertext'])
        .where('id', '=', key.id)
        .executeTakeFirstOrThrow();
      return r.state === 'Destroyed' ? r : undefined;
    });
    expect(row.key_ciphertext).toBeNull();
    expect((await kmsCli<{ ok: boolean }>(ca.ctx, ['audit', 'verify'])).ok).toBe(true);
  });
});
