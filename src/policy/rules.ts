import { randomUUID } from 'node:crypto';

import type { Executor, PolicyEffect, PolicyKind } from '../db/schema.ts';
import { parsePattern, PatternError } from './patterns.ts';
import { parseScope, type Scope } from './scopes.ts';

export interface PolicyRule {
  /** A uuid for database rules, `config:<n>` for rules from the configuration file. */
  id: string;
  scope: Scope;
  effect: PolicyEffect;
  kind: PolicyKind;
  pattern: string;
  source: 'config' | 'database';
}

/** The `policy.rules` configuration entries. */
export type ConfigRules = ReadonlyArray<{ allow: string } | { deny: string }>;

/** Config rules are global and validated here, so a bad pattern fails at start-up with its index. */
export function configRules(rules: ConfigRules): PolicyRule[] {
  return rules.map((r, i) => {
    const [effect, text] = 'allow' in r ? (['allow', r.allow] as const) : (['deny', r.deny] as const);
    try {
      return { id: `config:${i}`, scope: 'global', effect, ...parsePattern(text), source: 'config' };
    } catch (err) {
      throw new PatternError(`policy.rules[${i}]: ${(err as Error).message}`);
    }
  });
}

/** Notified whenever policy_rules changes: every replica following it drops its copy (rules-cache.ts). */
export const POLICY_RULES_CHANNEL = 'keyward_policy_rules';

/** Per database object, what to tell this process's copy when a rule is written through it. */
export const localRuleChanges = new WeakMap<Executor, () => void>();

/** Tells every replica that policy_rules changed (NOTIFY, delivered after commit), and this process at once. */
async function notifyRulesChanged(db: Executor): Promise<void> {
  // Through the query builder: the command line loads this module and must not load kysely itself.
  await db.selectNoFrom((eb) => eb.fn('pg_notify', [eb.val(POLICY_RULES_CHANNEL), eb.val('')]).as('sent')).execute();
  localRuleChanges.get(db)?.();
}

export async function addRule(
  db: Executor,
  input: { scope: string; effect: PolicyEffect; pattern: string; principal: string },
): Promise<{ rule: PolicyRule; created: boolean }> {
  const scope = parseScope(input.scope);
  const { kind, pattern } = parsePattern(input.pattern);
  const id = randomUUID();
  // Idempotent: adding the same rule twice returns the first one (the unique key decides, so
  // two replicas adding it at once end with one row).
  await db
    .insertInto('policy_rules')
    .values({ id, scope, effect: input.effect, kind, pattern, created_by: input.principal })
    .onConflict((oc) => oc.columns(['scope', 'effect', 'kind', 'pattern']).doNothing())
    .execute();
  await notifyRulesChanged(db);
  const row = await db
    .selectFrom('policy_rules')
    .selectAll()
    .where('scope', '=', scope)
    .where('effect', '=', input.effect)
    .where('kind', '=', kind)
    .where('pattern', '=', pattern)
    .executeTakeFirstOrThrow();
  return { rule: toRule(row), created: row.id === id };
}

export async function removeRule(db: Executor, id: string): Promise<boolean> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return false;
  const r = await db.deleteFrom('policy_rules').where('id', '=', id).executeTakeFirst();
  await notifyRulesChanged(db);
  return Number(r.numDeletedRows) > 0;
}

/** Database rules of the given scopes (all scopes when none are given). */
export async function listRules(db: Executor, scopes?: readonly Scope[]): Promise<PolicyRule[]> {
  let q = db.selectFrom('policy_rules').selectAll().orderBy('scope').orderBy('created_at').orderBy('id');
  if (scopes) {
    if (scopes.length === 0) return [];
    q = q.where('scope', 'in', scopes);
  }
  return (await q.execute()).map(toRule);
}

function toRule(row: {
  id: string;
  scope: string;
  effect: PolicyEffect;
  kind: PolicyKind;
  pattern: string;
}): PolicyRule {
  return {
    id: row.id,
    scope: row.scope as Scope,
    effect: row.effect,
    kind: row.kind,
    pattern: row.pattern,
    source: 'database',
  };
}

export function describeRule(rule: PolicyRule): string {
  return `${rule.effect} ${rule.kind} ${rule.pattern} (${rule.scope}, rule ${rule.id})`;
}
