import { KeywardError } from '../core/errors.ts';
import type { Identifier } from '../core/identifiers.ts';
import type { RateLimitResult } from '../policy/index.ts';
import { evaluateNames, policyRefusal } from '../policy/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';

/** rateLimited (429) with Retry-After, as clients back off on it (RFC 8555 §6.6). */
export function throwIfLimited(result: RateLimitResult & { key?: string }, what: string): void {
  if (result.ok) return;
  throw new KeywardError(
    'rateLimited',
    `${what}: at most ${result.limit} per ${Math.round(result.windowMs / 1000)} s; retry after ${result.retryAfterSeconds} s`,
    { retryAfter: result.retryAfterSeconds },
  );
}

/** The name policy for this account (and its EAB binding): one subproblem per refused identifier. */
export async function enforceNamePolicy(
  deps: AcmeDeps,
  account: AccountRow,
  identifiers: readonly Identifier[],
): Promise<void> {
  const evaluation = await evaluateNames(deps.db, deps.ctx.config.policy, identifiers, {
    accountId: account.id,
    eabKid: account.eab_key_id ?? undefined,
  });
  if (!evaluation.allowed) throw policyRefusal(evaluation);
}
