import { randomUUID } from 'node:crypto';

import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DatabaseHandle } from '../../src/db/connect.ts';
import { statementStats } from '../../src/db/statement-stats.ts';
import { evaluateNames } from '../../src/policy/names.ts';
import { consume, peek, RateLimiter } from '../../src/policy/rate-limits.ts';
import { addRule, listRules, POLICY_RULES_CHANNEL, removeRule } from '../../src/policy/rules.ts';
import { policyRulesFeature } from '../../src/policy/rules-cache.ts';
import { createTestStore, type TestStore } from '../support/db.ts';

describe('policy rules and rate limits in the database', () => {
  let store: TestStore;
  let handle: DatabaseHandle;
  beforeAll(async () => {
    store = await createTestStore();
    handle = await store.open();
  });
  afterAll(async () => {
    await handle.close();
    await store.cleanup();
  });

  it('stores rules per scope, idempotently, and evaluateNames combines them with config rules', async () => {
    const db = handle.db;
    const a = await addRule(db, {
      scope: 'account:acct-1',
      effect: 'allow',
      pattern: 'payments.internal',
      principal: 't',
    });
    expect(a.created).toBe(true);
    const again = await addRule(db, {
      scope: 'account:acct-1',
      effect: 'allow',
      pattern: 'Payments.Internal',
      principal: 't',
    });
    expect(again).toEqual({ rule: a.rule, created: false });
    await addRule(db, { scope: 'eab:kid-9', effect: 'deny', pattern: '10.9.0.0/16', principal: 't' });
    await expect(
      addRule(db, { scope: 'team:x', effect: 'allow', pattern: 'a.internal', principal: 't' }),
    ).rejects.toThrow(/not a scope/);

    const settings = {
      rules: [{ allow: '*.internal' }, { allow: '10.0.0.0/8' }, { deny: 'secrets.internal' }],
      defaultAction: 'allow' as const,
    };
    const ids = [
      { type: 'dns' as const, value: 'payments.internal' },
      { type: 'dns' as const, value: 'api.internal' },
      { type: 'dns' as const, value: 'secrets.internal' },
      { type: 'ip' as const, value: '10.9.0.1' },
    ];
    const acct = await evaluateNames(db, settings, ids, { accountId: 'acct-1' });
    expect(acct.decisions.map((d) => d.allowed)).toEqual([true, false, false, true]);
    const viaEab = await evaluateNames(db, settings, ids, { accountId: 'acct-2', eabKid: 'kid-9' });
    expect(viaEab.decisions.map((d) => d.allowed)).toEqual([true, true, false, false]);
    const refusal = viaEab.decisions[3]!;
    expect(!refusal.allowed && refusal.rule?.scope).toBe('eab:kid-9');

    expect((await listRules(db)).length).toBe(2);
    expect(await removeRule(db, a.rule.id)).toBe(true);
    expect(await removeRule(db, a.rule.id)).toBe(false);
    expect((await evaluateNames(db, settings, ids.slice(0, 2), { accountId: 'acct-1' })).allowed).toBe(true);
  });

  it('a limit refuses past its count with Retry-After, and resets after its window (injected clock)', async () => {
    const db = handle.db;
    const rule = { name: 'newOrdersPerAccount', limit: 3, windowMs: 3_600_000 };
    const t0 = new Date('2030-01-01T00:00:00Z');
    for (let i = 0; i < 3; i++)
      expect((await consume(db, rule, 'acct-1', new Date(t0.getTime() + i * 1000))).ok).toBe(true);
    const refused = await consume(db, rule, 'acct-1', new Date(t0.getTime() + 600_000));
    expect(refused).toEqual({ ok: false, retryAfterSeconds: 3000, limit: 3, windowMs: 3_600_000 });
    expect((await peek(db, rule, 'acct-1', new Date(t0.getTime() + 600_000))).ok).toBe(false);
    // Another key and another limit have their own counters.
    expect((await consume(db, rule, 'acct-2', t0)).ok).toBe(true);
    expect((await consume(db, { ...rule, name: 'failedValidationsPerAccount' }, 'acct-1', t0)).ok).toBe(true);
    // One second before the window ends: still refused; at its end: a new window.
    expect((await consume(db, rule, 'acct-1', new Date(t0.getTime() + 3_599_000))).ok).toBe(false);
    expect(await consume(db, rule, 'acct-1', new Date(t0.getTime() + 3_600_000))).toEqual({ ok: true, remaining: 2 });
  });

  it('concurrent hits never exceed the limit (one conditional upsert each)', async () => {
    const rule = { name: 'certificatesPerName', limit: 5, windowMs: 604_800_000 };
    const now = new Date('2030-02-01T00:00:00Z');
    const results = await Promise.all(Array.from({ length: 20 }, () => consume(handle.db, rule, 'api.internal', now)));
    expect(results.filter((r) => r.ok).length).toBe(5);
  });

  it('consumeAll counts every name or none', async () => {
    const limiter = new RateLimiter({
      newOrdersPerAccount: { limit: 0, window: 3_600_000 },
      certificatesPerName: { limit: 2, window: 604_800_000 },
      failedValidationsPerAccount: { limit: 5, window: 3_600_000 },
    });
    const now = new Date('2030-03-01T00:00:00Z');
    expect((await limiter.consumeAll(handle.db, 'certificatesPerName', ['a.internal', 'b.internal'], now)).ok).toBe(
      true,
    );
    expect((await limiter.consume(handle.db, 'certificatesPerName', 'b.internal', now)).ok).toBe(true);
    const r = await limiter.consumeAll(handle.db, 'certificatesPerName', ['a.internal', 'b.internal'], now);
    expect(r).toMatchObject({ ok: false, key: 'b.internal' });
    // a.internal was not counted by the refused call: one more is still allowed.
    expect((await limiter.consume(handle.db, 'certificatesPerName', 'a.internal', now)).ok).toBe(true);
    // limit 0 switches a limit off.
    for (let i = 0; i < 3; i++)
      expect((await limiter.consume(handle.db, 'newOrdersPerAccount', 'x', now)).ok).toBe(true);
  });

  it('a served replica keeps rules in memory and drops them when any replica changes a rule', async () => {
    const db = handle.db;
    const stop = policyRulesFeature(db, handle.listen, pino({ level: 'silent' })).start!();
    try {
      const settings = { rules: [], defaultAction: 'allow' as const };
      const names = [{ type: 'dns' as const, value: 'cached.internal' }];
      const allowed = async () => (await evaluateNames(db, settings, names, { accountId: 'acct-c' })).allowed;
      // Following starts asynchronously; from then on a repeated evaluation reads nothing.
      await expect
        .poll(async () => {
          await allowed();
          const before = statementStats.statements;
          await allowed();
          return handle.kind === 'embedded' || statementStats.statements === before;
        })
        .toBe(true);
      expect(await allowed()).toBe(true);
      // Another replica's write: a row and its notification, not through this process's addRule.
      await sql`INSERT INTO policy_rules (id, scope, effect, kind, pattern, created_by)
        VALUES (${randomUUID()}, 'account:acct-c', 'deny', 'dns', 'cached.internal', 'other-replica')`.execute(db);
      await sql`SELECT pg_notify(${POLICY_RULES_CHANNEL}, '')`.execute(db);
      await expect.poll(allowed, { timeout: 5000 }).toBe(false);
      // A rule removed through addRule/removeRule here applies at once, before its notification.
      const [rule] = (await listRules(db, ['account:acct-c'])).filter((r) => r.pattern === 'cached.internal');
      expect(await removeRule(db, rule!.id)).toBe(true);
      expect(await allowed()).toBe(true);
    } finally {
      await stop();
    }
  });
});
