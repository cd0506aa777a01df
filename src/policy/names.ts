import { type KeywardError, refusalOf } from '../core/errors.ts';
import type { Identifier } from '../core/identifiers.ts';
import type { Executor } from '../db/schema.ts';
import { matches, overlaps } from './patterns.ts';
import { type ConfigRules, configRules, describeRule, type PolicyRule } from './rules.ts';
import { rulesOf } from './rules-cache.ts';
import { type PolicySubject, type Scope, scopesOf } from './scopes.ts';

export type NameDecision =
  | {
      identifier: Identifier;
      allowed: true;
      /** The allow rule of the narrowest scope that matched, if any. */ rule?: PolicyRule;
    }
  | {
      identifier: Identifier;
      allowed: false;
      /** The deny rule that refused it; absent when no allow rule of `scope` matched. */
      rule?: PolicyRule;
      /** The scope whose rules refused it ('default' when policy.defaultAction is deny). */
      scope: Scope | 'default';
      /** One sentence for people and for ACME subproblem details. */
      reason: string;
    };

export interface PolicyEvaluation {
  allowed: boolean;
  decisions: NameDecision[];
}

export interface PolicySettings {
  rules: ConfigRules;
  defaultAction: 'allow' | 'deny';
}

/**
 * Decides each identifier on its own, so a caller can report one refusal per identifier.
 *
 * - Deny wins: a deny rule of any applicable scope that covers the identifier refuses it.
 * - Allow rules narrow, layer by layer: each applicable scope (global, issuer, EAB binding,
 *   account) that has allow rules for the identifier's type must have one that matches. So a
 *   global `*.internal` with an account's `payments.internal` lets that account have only
 *   payments.internal, and other accounts anything under .internal.
 * - A type no applicable scope has allow rules for follows `defaultAction`.
 */
export function decide(
  rules: readonly PolicyRule[],
  identifiers: readonly Identifier[],
  subject: PolicySubject,
  defaultAction: 'allow' | 'deny',
): PolicyEvaluation {
  const scopes = scopesOf(subject);
  const applicable = rules.filter((r) => scopes.includes(r.scope));
  const decisions = identifiers.map((identifier): NameDecision => {
    const ofKind = applicable.filter((r) => r.kind === identifier.type);
    const deny = ofKind.find((r) => r.effect === 'deny' && overlaps(r.kind, r.pattern, identifier.value));
    if (deny)
      return {
        identifier,
        allowed: false,
        rule: deny,
        scope: deny.scope,
        reason: `${identifier.type} "${identifier.value}" is refused by ${describeRule(deny)}`,
      };
    let matched: PolicyRule | undefined;
    let anyAllow = false;
    for (const scope of scopes) {
      const allows = ofKind.filter((r) => r.effect === 'allow' && r.scope === scope);
      if (allows.length === 0) continue;
      anyAllow = true;
      const hit = allows.find((r) => matches(r.kind, r.pattern, identifier.value));
      if (!hit) {
        const shown =
          allows
            .slice(0, 5)
            .map((r) => r.pattern)
            .join(', ') + (allows.length > 5 ? ', ...' : '');
        return {
          identifier,
          allowed: false,
          scope,
          reason: `${identifier.type} "${identifier.value}" matches no allow rule of scope ${scope} (allowed there: ${shown})`,
        };
      }
      matched = hit;
    }
    if (!anyAllow && defaultAction === 'deny') {
      return {
        identifier,
        allowed: false,
        scope: 'default',
        reason: `${identifier.type} "${identifier.value}": no allow rule covers ${identifier.type} names and policy.defaultAction is deny`,
      };
    }
    return matched ? { identifier, allowed: true, rule: matched } : { identifier, allowed: true };
  });
  return { allowed: decisions.every((d) => d.allowed), decisions };
}

/**
 * The entry point for ACME and the mesh flows: the configured global rules and the database rules
 * of the subject's scopes (kept in memory while `keyward serve` follows changes, else one query),
 * then decides. Reads only, so it is safe anywhere.
 */
export async function evaluateNames(
  db: Executor,
  settings: PolicySettings,
  identifiers: readonly Identifier[],
  subject: PolicySubject = {},
): Promise<PolicyEvaluation> {
  const rules = [...parsedConfigRules(settings.rules), ...(await rulesOf(db, scopesOf(subject)))];
  return decide(rules, identifiers, subject, settings.defaultAction);
}

/** The refusal of an evaluation: rejectedIdentifier, one subproblem per refused identifier. */
export function policyRefusal(evaluation: PolicyEvaluation): KeywardError {
  const refused = evaluation.decisions.filter((d): d is Extract<NameDecision, { allowed: false }> => !d.allowed);
  return refusalOf(
    refused.map((d) => ({ kind: 'rejectedIdentifier', detail: d.reason, identifier: d.identifier })),
    `The name policy refuses ${refused.length === 1 ? 'an identifier' : `${refused.length} identifiers`}`,
  );
}

// The configuration's rules, parsed once per settings object.
const parsedConfig = new WeakMap<ConfigRules, PolicyRule[]>();
function parsedConfigRules(rules: ConfigRules): PolicyRule[] {
  let parsed = parsedConfig.get(rules);
  if (!parsed) {
    parsed = configRules(rules);
    parsedConfig.set(rules, parsed);
  }
  return parsed;
}
