import type { RateLimitResult } from '../policy/index.ts';
import { evaluateNames, type Identifier, refusalSummary } from '../policy/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { AcmeProblem } from './problem.ts';

/** rateLimited (429) with Retry-After, as clients back off on it (RFC 8555 §6.6). */
export function throwIfLimited(result: RateLimitResult & { key?: string }, what: string): void {
  if (result.ok) return;
  const problem = new AcmeProblem(
    'rateLimited',
    `${what}: at most ${result.limit} per ${Math.round(result.windowMs / 1000)} s; retry after ${result.retryAfterSeconds} s`,
  );
  problem.headers['Retry-After'] = String(result.retryAfterSeconds);
  throw problem;
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
  if (evaluation.allowed) return;
  const problem = new AcmeProblem('rejectedIdentifier', refusalSummary(evaluation));
  problem.subproblems = evaluation.decisions
    .filter((d) => !d.allowed)
    .map((d) => ({ type: 'rejectedIdentifier', detail: d.allowed ? '' : d.reason, identifier: d.identifier }));
  throw problem;
}
