import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { AppContext } from '../../src/context.ts';
import type { Db } from '../../src/db/schema.ts';
import { eventHash } from '../../src/kms/audit.ts';
import type { AuditListItem } from '../../src/kms/audit-query.ts';
import type { Checkpoint, FullVerification } from '../../src/kms/checkpoints.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { keyward } from '../support/cli.ts';
import { issueLeaf, kmsCli } from './helpers.ts';

/** Recomputes every hash from `from` on, as someone with database access could. */
async function rechain(db: Db): Promise<void> {
  const rows = await db.selectFrom('audit_events').selectAll().orderBy('seq').execute();
  let prev: Uint8Array = Buffer.alloc(32);
  for (const r of rows) {
    const hash = eventHash(prev, { ...r, seq: Number(r.seq), ts: new Date(r.ts) });
    await db.updateTable('audit_events').set({ prev_hash: prev, hash }).where('seq', '=', r.seq).execute();
    prev = hash;
  }
  await db.updateTable('audit_head').set({ hash: prev }).where('id', '=', 1).execute();
}

describe('audit log', () => {
  let ca: TestCa;
  let ctx: AppContext;
  beforeEach(async () => {
    ca = await startTestCa({ serve: false });
    ctx = ca.ctx;
    for (let i = 0; i < 3; i++) await issueLeaf(ctx, `a${i}.internal`);
  });
  afterEach(async () => {
    await ctx.close().catch(() => undefined);
    await ca.store.cleanup();
  });
  const verify = (values: Record<string, string> = {}) => kmsCli<FullVerification>(ctx, ['audit', 'verify'], values);

  it('lists every key use and change, by key and since a time', async () => {
    const keyId = (await ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.key_id;
    await kmsCli(ctx, ['kms', 'rotate'], {}, []);
    const all = await kmsCli<AuditListItem[]>(ctx, ['audit', 'list'], {});
    expect(all.map((e) => e.action)).toEqual(
      expect.arrayContaining(['create-root', 'create-kek', 'create-key', 'sign-certificate', 'rotate']),
    );
    const mine = await kmsCli<AuditListItem[]>(ctx, ['audit', 'list'], { key: keyId });
    expect(mine.every((e) => e.keyId === keyId)).toBe(true);
    const signs = mine.filter((e) => e.action === 'sign-certificate' && e.context.profile === 'tls-server');
    expect(signs).toHaveLength(3);
    expect(signs[0]).toMatchObject({ principal: 'keyward', outcome: 'success', keyVersion: 1 });
    expect(signs[0]!.context.serial).toMatch(/^[0-9a-f]+$/);
    expect((await kmsCli<AuditListItem[]>(ctx, ['audit', 'list'], { since: '1h' })).length).toBe(all.length);
    expect(await kmsCli<AuditListItem[]>(ctx, ['audit', 'list'], { since: '2999-01-01T00:00:00Z' })).toEqual([]);
  });

  it('names the first edited, deleted, reordered or inserted row', async () => {
    expect((await verify()).ok).toBe(true);
    const db = ctx.database.db;

    await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = 5`.execute(db);
    expect((await verify()).firstBad).toMatchObject({ seq: 5, problem: 'edited' });
    await sql`UPDATE audit_events SET principal = (SELECT principal FROM audit_events WHERE seq = 4) WHERE seq = 5`.execute(
      db,
    );
    await rechain(db);
    expect((await verify()).ok).toBe(true);

    const saved = await db.selectFrom('audit_events').selectAll().where('seq', '=', 6).executeTakeFirstOrThrow();
    await db.deleteFrom('audit_events').where('seq', '=', 6).execute();
    expect((await verify()).firstBad).toMatchObject({ seq: 6, problem: 'deleted' });
    await db
      .insertInto('audit_events')
      .values({ ...saved, context: JSON.stringify(saved.context) })
      .execute();
    expect((await verify()).ok).toBe(true);

    // Reorder: swap rows 7 and 8 (each keeps its own hashes).
    await sql`UPDATE audit_events SET seq = -1 WHERE seq = 7`.execute(db);
    await sql`UPDATE audit_events SET seq = 7 WHERE seq = 8`.execute(db);
    await sql`UPDATE audit_events SET seq = 8 WHERE seq = -1`.execute(db);
    expect((await verify()).firstBad).toMatchObject({ seq: 7, problem: 'inserted-or-reordered' });
    await sql`UPDATE audit_events SET seq = -1 WHERE seq = 7`.execute(db);
    await sql`UPDATE audit_events SET seq = 7 WHERE seq = 8`.execute(db);
    await sql`UPDATE audit_events SET seq = 8 WHERE seq = -1`.execute(db);

    // Insert: shift 9.. up and put a well-formed row at 9 that follows 8.
    await sql`UPDATE audit_events SET seq = -seq WHERE seq >= 9`.execute(db);
    await sql`UPDATE audit_events SET seq = -seq + 1 WHERE seq < 0`.execute(db);
    const eight = await db.selectFrom('audit_events').selectAll().where('seq', '=', 8).executeTakeFirstOrThrow();
    const fake = {
      seq: 9,
      event_id: eight.event_id,
      ts: new Date(eight.ts),
      principal: 'mallory',
      action: 'unwrap',
      key_id: null,
      key_version: null,
      outcome: 'success' as const,
      error_code: null,
      context: {},
    };
    await db
      .insertInto('audit_events')
      .values({ ...fake, context: '{}', prev_hash: eight.hash, hash: eventHash(eight.hash, fake) })
      .execute();
    expect((await verify()).firstBad).toMatchObject({ seq: 10, problem: 'inserted-or-reordered' });
  });

  it('signed checkpoints, exported elsewhere, expose a full rewrite of the chain', async () => {
    const first = await kmsCli<Checkpoint>(ctx, ['audit', 'checkpoint']);
    await issueLeaf(ctx, 'later.internal');
    const second = await kmsCli<Checkpoint>(ctx, ['audit', 'checkpoint']);
    expect(second.seq).toBeGreaterThan(first.seq);
    expect(second.prevSig).toBe(first.sig);
    const exported = await kmsCli<Checkpoint[]>(ctx, ['audit', 'checkpoints', 'export']);
    expect(exported).toEqual([first, second]);
    const file = join(ca.store.dataDir, 'checkpoints.jsonl');
    writeFileSync(file, exported.map((c) => JSON.stringify(c)).join('\n') + '\n');
    expect(await verify({ checkpoints: file })).toMatchObject({ ok: true, checkpoints: 2, externalCheckpoints: 2 });

    // A DB admin edits an old event and recomputes the whole chain: the chain alone looks fine...
    const db = ctx.database.db;
    await sql`UPDATE audit_events SET principal = 'nobody' WHERE seq = 3`.execute(db);
    await rechain(db);
    // ...but the stored checkpoints no longer match,
    expect((await verify()).firstBad).toMatchObject({ seq: first.seq, problem: 'rewritten' });
    // and with them deleted too, only the exported copy tells.
    await db.deleteFrom('audit_checkpoints').execute();
    expect((await verify()).ok).toBe(true);
    const v = await verify({ checkpoints: file });
    expect(v).toMatchObject({ ok: false, firstBad: { seq: first.seq, problem: 'rewritten' } });
    expect(v.firstBad!.detail).toMatch(/differ from the exported checkpoint/);

    // A forged exported line (signature no longer matches) is refused as such.
    const forged = { ...first, headHash: '00'.repeat(32) };
    writeFileSync(file, JSON.stringify(forged) + '\n');
    expect((await verify({ checkpoints: file })).firstBad).toMatchObject({ problem: 'bad-checkpoint' });
  });

  it('the command line: --json output and exit codes', async () => {
    await sql`UPDATE audit_events SET action = 'nothing' WHERE seq = 4`.execute(ctx.database.db);
    const keyId = (await ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.key_id;
    await ctx.close();
    const v = await keyward(['audit', 'verify', '--json'], ca.env);
    expect(v.code).toBe(1);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: false, firstBad: { seq: 4, problem: 'edited' } });
    const human = await keyward(['audit', 'verify'], ca.env);
    expect(human.stdout).toMatch(/broken at event 4: event 4 was changed after it was written \(edited\)/);
    const d = await keyward(['kms', 'schedule-deletion', keyId, '--days', '3'], ca.env);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/--days must be a whole number from 7 to 30/);
    const list = await keyward(['kms', 'list', '--json'], ca.env);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { kind: string }[]).some((k) => k.kind === 'kek')).toBe(true);
  });
});
