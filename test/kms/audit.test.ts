import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { loadConfig } from '../../src/config/load.ts';
import { type AppContext, openContext } from '../../src/context.ts';
import type { Db } from '../../src/db/schema.ts';
import { type HashInput, legacyEventHash } from '../../src/kms/audit.ts';
import type { AuditListItem } from '../../src/kms/audit-query.ts';
import type { Checkpoint, FullVerification } from '../../src/kms/checkpoints.ts';
import { type TestCa, testCaTemplate } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { createTestStore } from '../support/db.ts';
import { issueLeaf, kmsCli } from './helpers.ts';

type Hasher = (prev: Uint8Array, e: HashInput) => Buffer;

const TS_US = sql.raw(`to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`);

/**
 * Recomputes the links from event `from` on, as someone who can write to the database could: with
 * plain SHA-256 (all a database writer has) or with the chain key (a root-key holder's power).
 */
async function rechain(db: Db, hash: Hasher, keyedFrom: number, from = 1, to = Number.MAX_SAFE_INTEGER): Promise<void> {
  const rows = await sql<Record<string, unknown> & { seq: string; ts_us: string }>`
    SELECT *, ${TS_US} AS ts_us FROM audit_events WHERE seq >= ${from - 1} AND seq <= ${to} ORDER BY seq`.execute(db);
  let prev: Uint8Array = Buffer.alloc(32);
  for (const r of rows.rows) {
    const seq = Number(r.seq);
    if (seq === from - 1) {
      prev = r.hash as Uint8Array;
      continue;
    }
    const ts = seq >= keyedFrom ? r.ts_us : `${r.ts_us.slice(0, 23)}Z`;
    const h = hash(prev, { ...(r as unknown as HashInput), seq, ts });
    await db.updateTable('audit_events').set({ prev_hash: prev, hash: h }).where('seq', '=', seq).execute();
    prev = h;
  }
  if (to === Number.MAX_SAFE_INTEGER)
    await db.updateTable('audit_head').set({ hash: prev }).where('id', '=', 1).execute();
}

describe('audit log', () => {
  // Each case tampers with its own copy of one CA that has issued three leaves.
  let template: Awaited<ReturnType<typeof testCaTemplate>>;
  let ca: TestCa;
  let ctx: AppContext;
  beforeAll(async () => {
    template = await testCaTemplate(async (t) => {
      for (let i = 0; i < 3; i++) await issueLeaf(t.ctx, `a${i}.internal`);
    });
  });
  afterAll(async () => template?.close());
  beforeEach(async () => {
    ca = await template.copy();
    ctx = ca.ctx;
  });
  afterEach(async () => ca?.close());
  const verify = (values: Record<string, string> = {}) => kmsCli<FullVerification>(ctx, ['audit', 'verify'], values);
  const unkeyed: Hasher = (prev, e) => legacyEventHash(prev, e);

  it('lists every key use and change, by key and since a time', async () => {
    const keyId = (await ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.key_id!;
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

  it('is keyed from the first event of a new installation, with microsecond timestamps', async () => {
    const v = await verify();
    expect(v).toMatchObject({ ok: true, keyedFrom: 1, lastCheckpointSeq: 0 });
    expect(v.keyOnlyEvents).toBe(v.events);
    const first = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('seq', '=', 1)
      .executeTakeFirstOrThrow();
    expect(first).toMatchObject({ action: 'create-kek', context: { name: 'audit-chain', purpose: 'audit' } });
    // The clock's sub-millisecond digits are hashed and stored (PGlite's clock only ticks in ms).
    const us = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM audit_events WHERE extract(microseconds FROM ts)::bigint % 1000 <> 0`.execute(
      ctx.database.db,
    );
    if (ca.store.databaseUrl) expect(us.rows[0]!.n).toBeGreaterThan(0);
  });

  it('names the first edited, deleted, reordered or inserted row, even when the chain is recomputed', async () => {
    const db = ctx.database.db;

    await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = 5`.execute(db);
    expect((await verify()).firstBad).toMatchObject({ seq: 5, problem: 'edited' });
    // A database writer recomputes every hash after the edit: without the key the MAC still fails.
    await rechain(db, unkeyed, 1, 5);
    expect((await verify()).firstBad).toMatchObject({ seq: 5, problem: 'edited' });
    await rechain(db, (p, e) => ctx.kms.audit.hash(p, e), 1);
    await sql`UPDATE audit_events SET principal = 'test' WHERE seq = 5`.execute(db);
    await rechain(db, (p, e) => ctx.kms.audit.hash(p, e), 1);
    expect((await verify()).ok).toBe(true);

    // A timestamp moved by one microsecond.
    await sql`UPDATE audit_events SET ts = ts + interval '1 microsecond' WHERE seq = 4`.execute(db);
    expect((await verify()).firstBad).toMatchObject({ seq: 4, problem: 'edited' });
    await sql`UPDATE audit_events SET ts = ts - interval '1 microsecond' WHERE seq = 4`.execute(db);

    // Moved aside rather than read and re-inserted: a JavaScript Date would drop the microseconds.
    await sql`UPDATE audit_events SET seq = -6 WHERE seq = 6`.execute(db);
    expect((await verify()).firstBad).toMatchObject({ seq: 6, problem: 'deleted' });
    await sql`UPDATE audit_events SET seq = 6 WHERE seq = -6`.execute(db);
    expect((await verify()).ok).toBe(true);

    // Reorder: swap rows 7 and 8 (each keeps its own hashes).
    const swap = async () => {
      await sql`UPDATE audit_events SET seq = -1 WHERE seq = 7`.execute(db);
      await sql`UPDATE audit_events SET seq = 7 WHERE seq = 8`.execute(db);
      await sql`UPDATE audit_events SET seq = 8 WHERE seq = -1`.execute(db);
    };
    await swap();
    expect((await verify()).firstBad).toMatchObject({ seq: 7, problem: 'inserted-or-reordered' });
    await swap();

    // Insert: shift 9.. up and put a row at 9 that links to 8 (its hash is all a writer can make).
    await sql`UPDATE audit_events SET seq = -seq WHERE seq >= 9`.execute(db);
    await sql`UPDATE audit_events SET seq = -seq + 1 WHERE seq < 0`.execute(db);
    await sql`UPDATE audit_head SET seq = seq + 1`.execute(db);
    const eight = await db.selectFrom('audit_events').selectAll().where('seq', '=', 8).executeTakeFirstOrThrow();
    const fake: HashInput = {
      seq: 9,
      event_id: randomUUID(),
      ts: new Date(eight.ts).toISOString(),
      principal: 'mallory',
      action: 'unwrap',
      key_id: null,
      key_version: null,
      outcome: 'success',
      error_code: null,
      context: {},
    };
    await db
      .insertInto('audit_events')
      .values({ ...fake, context: '{}', prev_hash: eight.hash, hash: legacyEventHash(eight.hash, fake) })
      .execute();
    expect((await verify()).firstBad).toMatchObject({ seq: 9, problem: 'edited' });
  });

  it('a rewrite after the newest checkpoint, or spanning one, is named at its first row', async () => {
    const db = ctx.database.db;
    const cp = await kmsCli<Checkpoint>(ctx, ['audit', 'checkpoint']);
    for (let i = 0; i < 2; i++) await issueLeaf(ctx, `b${i}.internal`);
    const head = Number((await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
    const v = await verify();
    expect(v).toMatchObject({ ok: true, lastCheckpointSeq: cp.seq, keyOnlyEvents: head - cp.seq });

    // After the checkpoint, recomputed from there on, checkpoints deleted too: the MAC names the row.
    await sql`UPDATE audit_events SET outcome = 'denied' WHERE seq = ${head - 1}`.execute(db);
    await rechain(db, unkeyed, 1, head - 1);
    await db.deleteFrom('audit_checkpoints').execute();
    expect((await verify()).firstBad).toMatchObject({ seq: head - 1, problem: 'edited' });
    await sql`UPDATE audit_events SET outcome = 'success' WHERE seq = ${head - 1}`.execute(db);
    await rechain(db, (p, e) => ctx.kms.audit.hash(p, e), 1, head - 1);
    expect((await verify()).ok).toBe(true);

    // Spanning the checkpoint (before it, recomputed through it): named at the edited row.
    await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = ${cp.seq - 2}`.execute(db);
    await rechain(db, unkeyed, 1, cp.seq - 2);
    expect((await verify()).firstBad).toMatchObject({ seq: cp.seq - 2, problem: 'edited' });
  });

  it('signed checkpoints, exported elsewhere, expose what a chain-key holder rewrites or cuts off', async () => {
    const first = await kmsCli<Checkpoint>(ctx, ['audit', 'checkpoint']);
    await issueLeaf(ctx, 'later.internal');
    const second = await kmsCli<Checkpoint>(ctx, ['audit', 'checkpoint']);
    expect(second.seq).toBeGreaterThan(first.seq);
    expect(second.prevSig).toBe(first.sig);
    const exported = await kmsCli<Checkpoint[]>(ctx, ['audit', 'checkpoints', 'export']);
    expect(exported).toEqual([first, second]);
    // `audit checkpoint` also wrote each one to the configured sink.
    const sink = readFileSync(ctx.config.kms.checkpointExport, 'utf8');
    expect(
      sink
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Checkpoint),
    ).toEqual([first, second]);
    const file = join(ca.store.dataDir, 'checkpoints.jsonl');
    writeFileSync(file, exported.map((c) => JSON.stringify(c)).join('\n') + '\n');
    expect(await verify({ checkpoints: file })).toMatchObject({
      ok: true,
      checkpoints: 2,
      externalCheckpoints: 2,
      lastCheckpointSeq: second.seq,
    });

    // Someone holding the chain key edits an old event and recomputes the chain: the MACs pass...
    const db = ctx.database.db;
    await sql`UPDATE audit_events SET principal = 'nobody' WHERE seq = 3`.execute(db);
    await rechain(db, (p, e) => ctx.kms.audit.hash(p, e), 1, 3);
    // ...but the stored checkpoints no longer match,
    expect((await verify()).firstBad).toMatchObject({ seq: 1, problem: 'rewritten' });
    // and with them deleted too, only the exported copy tells.
    await db.deleteFrom('audit_checkpoints').execute();
    expect((await verify()).ok).toBe(true);
    const v = await verify({ checkpoints: file });
    expect(v).toMatchObject({ ok: false, firstBad: { seq: 1, problem: 'rewritten' } });
    expect(v.firstBad!.detail).toMatch(/differ from the exported checkpoint.*chain key/);

    // Cutting the tail off (and moving the head back) needs no key; the exported copy tells.
    await sql`UPDATE audit_events SET principal = 'test' WHERE seq = 3`.execute(db);
    await rechain(db, (p, e) => ctx.kms.audit.hash(p, e), 1);
    expect((await verify({ checkpoints: file })).ok).toBe(true);
    const cut = second.seq - 1;
    const last = await db.selectFrom('audit_events').select('hash').where('seq', '=', cut).executeTakeFirstOrThrow();
    await db.deleteFrom('audit_events').where('seq', '>', cut).execute();
    await db.updateTable('audit_head').set({ seq: cut, hash: last.hash }).where('id', '=', 1).execute();
    expect((await verify()).ok).toBe(true);
    expect((await verify({ checkpoints: file })).firstBad).toMatchObject({ seq: second.seq, problem: 'deleted' });

    // A forged exported line (signature no longer matches) is refused as such.
    writeFileSync(file, JSON.stringify({ ...first, headHash: '00'.repeat(32) }) + '\n');
    expect((await verify({ checkpoints: file })).firstBad).toMatchObject({ problem: 'bad-checkpoint' });
  });

  it('verify while events are written reads one consistent head', async () => {
    let writing = true;
    const writer = (async () => {
      let n = 0;
      while (writing && n < 400) {
        await ctx.kms.audit.append(ctx.database.db, { principal: 'load', action: 'noop', outcome: 'success' });
        n++;
      }
      return n;
    })();
    const results: FullVerification[] = [];
    for (let i = 0; i < 8; i++) results.push(await verify());
    writing = false;
    expect(await writer).toBeGreaterThan(0);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect((await verify()).ok).toBe(true);
  });

  it('group commit: two replicas signing at once, with a transactional append among them, write one gap-free chain whose tampered rows are named', async () => {
    // A second replica: its own key hierarchy (own head guess, own batches) on the same database.
    const { openKeyHierarchy } = await import('../../src/kms/index.ts');
    const { rootOfTrustOptions } = await import('../../src/context.ts');
    const { CertificateAuthority } = await import('../../src/ca/authority.ts');
    const kms2 = await openKeyHierarchy(ctx.database.db, rootOfTrustOptions(ctx.config), 'replica-2');
    const other = { ...ctx, kms: kms2, ca: new CertificateAuthority(ctx.database.db, kms2, ctx.config.profiles) };
    const before = Number((await verify()).headSeq);
    const issued = await Promise.all([
      ...Array.from({ length: 16 }, (_, i) => issueLeaf(ctx, `g${i}.internal`)),
      ...Array.from({ length: 16 }, (_, i) => issueLeaf(other as AppContext, `r${i}.internal`)),
      // Appends under the head lock in its own transaction: both replicas' guesses go stale.
      kmsCli(ctx, ['kms', 'rotate'], {}, []),
    ]);
    expect(new Set(issued.slice(0, 32).map((c) => (c as { serial: string }).serial)).size).toBe(32);
    const v = await verify();
    expect(v).toMatchObject({ ok: true });
    expect(v.events).toBe(v.headSeq);
    const signs = await ctx.database.db
      .selectFrom('audit_events')
      .select(['seq', 'context'])
      .where('action', '=', 'sign-certificate')
      .where('seq', '>', before)
      .orderBy('seq')
      .execute();
    const serials = signs.map((e) => (e.context as { serial?: string }).serial);
    for (const c of issued.slice(0, 32)) expect(serials).toContain((c as { serial: string }).serial);

    const mid = Number(signs[Math.floor(signs.length / 2)]!.seq);
    await sql`UPDATE audit_events SET context = context || '{"serial":"00"}' WHERE seq = ${mid}`.execute(
      ctx.database.db,
    );
    expect((await verify()).firstBad).toMatchObject({ seq: mid, problem: 'edited' });
    await sql`DELETE FROM audit_events WHERE seq = ${mid - 1}`.execute(ctx.database.db);
    expect((await verify()).firstBad).toMatchObject({ seq: mid - 1, problem: 'deleted' });
  });

  it('the chain key is a KEK of the hierarchy that cannot be rotated, disabled or deleted', async () => {
    await expect(kmsCli(ctx, ['kms', 'rotate'], {}, ['audit-chain'])).rejects.toThrow(/keys the audit chain/);
    await expect(kmsCli(ctx, ['kms', 'disable'], {}, ['audit-chain'])).rejects.toThrow(/keys the audit chain/);
    await expect(
      kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '7', force: true }, ['audit-chain']),
    ).rejects.toThrow(/keys the audit chain/);
    const kek = await ctx.database.db
      .selectFrom('kms_kek_versions')
      .innerJoin('kms_keks', 'kms_keks.id', 'kms_kek_versions.kek_id')
      .select(['kms_keks.purpose', 'kms_kek_versions.wrapped'])
      .where('kms_keks.name', '=', 'audit-chain')
      .executeTakeFirstOrThrow();
    expect(kek.purpose).toBe('audit');
    expect(kek.wrapped.length).toBeGreaterThan(32);
    expect((await verify()).ok).toBe(true);
  });

  it('the command line: --json output and exit codes', async () => {
    await sql`UPDATE audit_events SET action = 'nothing' WHERE seq = 4`.execute(ctx.database.db);
    const keyId = (await ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.key_id!;
    const v = await cli(['audit', 'verify', '--json'], ca.env, { context: ctx });
    expect(v.code).toBe(1);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: false, firstBad: { seq: 4, problem: 'edited' } });
    const human = await cli(['audit', 'verify'], ca.env, { context: ctx });
    expect(human.stdout).toMatch(/broken at event 4: event 4 does not match its MAC.* \(edited\)/);
    const d = await cli(['kms', 'schedule-deletion', keyId, '--days', '3'], ca.env, { context: ctx });
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/--days must be a whole number from 7 to 30/);
    const list = await cli(['kms', 'list', '--json'], ca.env, { context: ctx });
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { kind: string }[]).some((k) => k.kind === 'kek')).toBe(true);
  });
});

// An installation from before the chain was keyed: its events stay an unkeyed prefix.
describe('audit log written before the chain key existed', () => {
  it('verifies the legacy prefix, keys everything after it, and names tampering on either side', async () => {
    const store = await createTestStore();
    const handle = await store.open();
    const db = handle.db;
    let prev: Uint8Array = Buffer.alloc(32);
    // Five events in the old format, as the previous release wrote them (milliseconds, no key).
    for (let seq = 1; seq <= 5; seq++) {
      const ts = new Date(Date.UTC(2025, 0, 1, 0, 0, seq, 123));
      const e: HashInput = {
        seq,
        event_id: randomUUID(),
        ts: ts.toISOString(),
        principal: 'old',
        action: 'noop',
        key_id: null,
        key_version: null,
        outcome: 'success',
        error_code: null,
        context: { n: seq },
      };
      const hash = legacyEventHash(prev, e);
      await db
        .insertInto('audit_events')
        .values({ ...e, ts, context: JSON.stringify(e.context), prev_hash: prev, hash })
        .execute();
      prev = hash;
    }
    await db.updateTable('audit_head').set({ seq: 5, hash: prev }).where('id', '=', 1).execute();
    await handle.close();

    const config = loadConfig({ dataDir: store.dataDir, env: { ...store.env } });
    const ctx = await openContext(config, { principal: 'test' });
    try {
      await ctx.ca.init({ organization: 'T', root: config.ca.root, intermediate: config.ca.intermediate }, 'test');
      await issueLeaf(ctx, 'x.internal');
      const verify = () => kmsCli<FullVerification>(ctx, ['audit', 'verify']);
      expect(await verify()).toMatchObject({ ok: true, keyedFrom: 6 });
      const d = ctx.database.db;

      // A legacy row edited without recomputing.
      await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = 2`.execute(d);
      expect((await verify()).firstBad).toMatchObject({ seq: 2, problem: 'edited' });
      await sql`UPDATE audit_events SET principal = 'old' WHERE seq = 2`.execute(d);
      expect((await verify()).ok).toBe(true);

      // Moving the boundary to pass keyed events off as legacy ones breaks at the boundary.
      await sql`UPDATE audit_head SET keyed_from = 7`.execute(d);
      expect((await verify()).firstBad).toMatchObject({ seq: 6, problem: 'edited' });
      await sql`UPDATE audit_head SET keyed_from = NULL`.execute(d);
      expect((await verify()).firstBad).toMatchObject({ problem: 'head-mismatch' });
      await sql`UPDATE audit_head SET keyed_from = 6`.execute(d);
      expect((await verify()).ok).toBe(true);

      // A legacy row recomputed by a database writer: the first keyed event no longer follows.
      await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = 3`.execute(d);
      await rechain(d, (p, e) => legacyEventHash(p, e), 6, 3, 5);
      const broken = await verify();
      expect(broken).toMatchObject({ ok: false, firstBad: { seq: 1, problem: 'rewritten' } });
      expect(broken.firstBad!.detail).toMatch(/events 1–5 \(unkeyed.*event 6, the first keyed one/);
    } finally {
      await ctx.close();
      await store.cleanup();
    }
  });
});
