import { PatternError } from './patterns.ts';

/** Where a rule applies: everywhere, one issuer, one ACME account, or one EAB binding. */
export type Scope = 'global' | `issuer:${string}` | `account:${string}` | `eab:${string}`;

export function parseScope(text: string): Scope {
  if (text === 'global') return 'global';
  const m = /^(issuer|account|eab):(.+)$/.exec(text);
  if (!m || m[2]!.trim() !== m[2])
    throw new PatternError(`"${text}" is not a scope (global, issuer:<id>, account:<id> or eab:<kid>)`);
  return text as Scope;
}

/** Who is asking: each field that is set adds its scope's rules to the global ones. */
export interface PolicySubject {
  issuerId?: string;
  accountId?: string;
  eabKid?: string;
}

/** Scopes in the order they are reported: broadest first. */
export function scopesOf(subject: PolicySubject): Scope[] {
  const scopes: Scope[] = ['global'];
  if (subject.issuerId) scopes.push(`issuer:${subject.issuerId}`);
  if (subject.eabKid) scopes.push(`eab:${subject.eabKid}`);
  if (subject.accountId) scopes.push(`account:${subject.accountId}`);
  return scopes;
}
