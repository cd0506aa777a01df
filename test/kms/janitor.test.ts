import { readFileSync } from 'node:fs';

import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { FullVerification } from '../../src/kms/checkpoints.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { issueLeaf, kmsCli } from './helpers.ts';

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

// The unsigned tail is bounded in time too, and every checkpoint leaves the database.
describe('audit checkpoints in a running server', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ settings: { kms: { checkpointInterval: '2s', checkpointEveryEvents: 1_000_000 } } });
  });
  afterAll(async () => {
    await ca.close();
  });

  it('signs within the interval after new events and appends each checkpoint to the export file', async () => {
    const db = ca.ctx.database.db;
    const state = async () => {
      const h = await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow();
      const c = await db.selectFrom('audit_checkpoints').select('seq').orderBy('seq', 'desc').execute();
      return `${Number(h.seq)}/${c.map((r) => Number(r.seq)).join(',')}`;
    };
    // Once the start-up work (OCSP signer, first CRL) is done the log goes quiet: a checkpoint's
    // own signing event alone does not make another one due, or checkpoints would never stop.
    let before = await state();
    await until(async () => {
      await new Promise((r) => setTimeout(r, 3_000));
      const now = await state();
      const quiet = now === before && now.includes('/') && !now.endsWith('/');
      before = now;
      return quiet ? true : undefined;
    }, 40_000);
    const first = Number(before.split('/')[1]!.split(',').pop());
    await issueLeaf(ca.ctx, 'tail.internal');
    const head = Number((await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
    const second = await until(async () => {
      const c = await db.selectFrom('audit_checkpoints').select('seq').orderBy('seq', 'desc').executeTakeFirst();
      return c && Number(c.seq) >= head ? Number(c.seq) : undefined;
    });
    expect(second).toBeGreaterThan(first);
    const lines = readFileSync(ca.ctx.config.kms.checkpointExport, 'utf8').trim().split('\n');
    const stored = await db.selectFrom('audit_checkpoints').select('seq').orderBy('seq').execute();
    expect(lines.map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual(stored.map((c) => Number(c.seq)));
    expect(stored.length).toBeGreaterThanOrEqual(2);
    const v = await kmsCli<FullVerification>(ca.ctx, ['audit', 'verify'], {
      checkpoints: ca.ctx.config.kms.checkpointExport,
    });
    expect(v).toMatchObject({ ok: true, externalCheckpoints: stored.length, lastCheckpointSeq: second });
    expect(v.keyOnlyEvents).toBeLessThanOrEqual(1);
  });
});
