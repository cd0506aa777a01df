import { z } from 'zod';

import type { KeyUsage } from '../db/schema.ts';
import { KmsError } from './errors.ts';

// Per-key policies: statements of effect × principals × actions × conditions.
// Evaluation follows AWS: any matching deny wins, else any matching allow, else deny.

export const KEY_ACTIONS = [
  'sign-certificate',
  'sign-crl',
  'sign-ocsp',
  'sign-audit-checkpoint',
  'sign-token',
  'unwrap',
  'encrypt',
  'decrypt',
  'generate-data-key',
  're-encrypt-from',
  're-encrypt-to',
] as const;
export type KeyAction = (typeof KEY_ACTIONS)[number];

const statementSchema = z
  .object({
    sid: z.string().optional(),
    effect: z.enum(['allow', 'deny']),
    /** Exact principals, "*" for anyone, or a prefix ending in "*" (e.g. "spiffe://prod/*"). */
    principals: z.array(z.string().min(1)).min(1),
    actions: z.array(z.enum(KEY_ACTIONS)).min(1),
    conditions: z
      .object({
        profile: z.array(z.string()).optional(),
        issuer: z.array(z.string()).optional(),
        /** Encryption-context key → allowed values ("*" = present with any value). */
        context: z.record(z.string(), z.array(z.string())).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const policySchema = z.object({ version: z.literal(1), statements: z.array(statementSchema) }).strict();
export type KeyPolicy = z.infer<typeof policySchema>;
type Statement = KeyPolicy['statements'][number];

export interface PolicyRequest {
  principal: string;
  action: KeyAction;
  profile?: string;
  issuer?: string;
  context?: Readonly<Record<string, string>>;
}

export function parsePolicy(value: unknown): KeyPolicy {
  const result = policySchema.safeParse(value);
  if (!result.success) {
    const first = result.error.issues[0]!;
    throw new KmsError('InvalidInput', `invalid policy at ${first.path.join('.') || '(top level)'}: ${first.message}`);
  }
  return result.data;
}

function principalMatches(patterns: string[], principal: string): boolean {
  return patterns.some(
    (p) => p === '*' || p === principal || (p.endsWith('*') && principal.startsWith(p.slice(0, -1))),
  );
}

function valueMatches(allowed: string[] | undefined, value: string | undefined): boolean {
  if (allowed === undefined) return true;
  if (value === undefined) return false;
  return allowed.includes('*') || allowed.includes(value);
}

function matches(s: Statement, req: PolicyRequest): boolean {
  if (!s.actions.includes(req.action) || !principalMatches(s.principals, req.principal)) return false;
  const c = s.conditions;
  if (!c) return true;
  if (!valueMatches(c.profile, req.profile) || !valueMatches(c.issuer, req.issuer)) return false;
  for (const [k, values] of Object.entries(c.context ?? {})) {
    if (!valueMatches(values, req.context?.[k])) return false;
  }
  return true;
}

export type Decision = { allowed: true } | { allowed: false; reason: string };

export function evaluate(policy: KeyPolicy, req: PolicyRequest): Decision {
  const deny = policy.statements.find((s) => s.effect === 'deny' && matches(s, req));
  if (deny)
    return {
      allowed: false,
      reason: `an explicit deny${deny.sid ? ` (${deny.sid})` : ''} refuses ${req.action} to ${req.principal}`,
    };
  if (policy.statements.some((s) => s.effect === 'allow' && matches(s, req))) return { allowed: true };
  return { allowed: false, reason: `no statement allows ${req.action} to ${req.principal}` };
}

/**
 * Defaults per usage. The CA itself is the principal that signs, so CA keys allow
 * any principal but only their own operations; a root key signs CA certificates only, which is
 * expressed as a deny for any signature that names a leaf profile.
 */
export function defaultPolicy(usage: KeyUsage): KeyPolicy {
  const allow = (actions: KeyAction[]): Statement => ({ effect: 'allow', principals: ['*'], actions });
  switch (usage) {
    case 'root-ca':
      return {
        version: 1,
        statements: [
          allow(['sign-certificate', 'sign-crl', 'unwrap']),
          {
            sid: 'root-signs-ca-certificates-only',
            effect: 'deny',
            principals: ['*'],
            actions: ['sign-certificate'],
            conditions: { profile: ['*'] },
          },
        ],
      };
    case 'intermediate':
      return { version: 1, statements: [allow(['sign-certificate', 'sign-crl', 'unwrap'])] };
    case 'ocsp':
      return { version: 1, statements: [allow(['sign-ocsp', 'unwrap'])] };
    case 'audit':
      return { version: 1, statements: [allow(['sign-audit-checkpoint', 'unwrap'])] };
    case 'provisioner':
      return { version: 1, statements: [allow(['sign-token', 'unwrap'])] };
    default:
      return { version: 1, statements: [allow(['unwrap'])] };
  }
}

/** App-data KEKs deny everyone until a policy names principals (a KEK nobody was granted must not hand out data keys to whoever asks). */
export function defaultDataKeyPolicy(principals: string[]): KeyPolicy {
  if (principals.length === 0) return { version: 1, statements: [] };
  return {
    version: 1,
    statements: [
      {
        effect: 'allow',
        principals,
        actions: ['encrypt', 'decrypt', 'generate-data-key', 're-encrypt-from', 're-encrypt-to'],
      },
    ],
  };
}

/** The stored policy, or the default for the usage when none was put. */
export function effectivePolicy(stored: unknown, usage: KeyUsage): KeyPolicy {
  return stored === null || stored === undefined
    ? defaultPolicy(usage)
    : parsePolicy(typeof stored === 'string' ? JSON.parse(stored) : stored);
}
