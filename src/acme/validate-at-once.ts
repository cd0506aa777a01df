import { addMs } from '../core/clock.ts';
import type { ValidationOutcome } from '../validation/index.ts';
import type { ChallengeFacts } from './challenge-facts.ts';
import type { AcmeDeps } from './deps.ts';
import { queueRetry, type SettlingJob } from './settle.ts';
import type { ChallengeRow } from './views.ts';
import { isTransient, publishOutcome, retryDelay, settleOutcome } from './worker.ts';

/**
 * How long a challenge POST waits for a check run at once before it records the validation as
 * started, with a job another replica takes over if this one dies. Within it, a replica that
 * dies mid-check has written nothing: the challenge is still pending, and the client, whose POST
 * failed either way, may POST it again (a job would only have finished the check without it).
 * Checks take milliseconds when the answer is in place; a busy server needs more, and each
 * check that outlasts this costs a statement and a commit more.
 */
export const AT_ONCE_GRACE_MS = 1_000;

/**
 * The outcome of a check started at once, recorded in one statement if it came within the grace
 * period: valid, invalid, or processing with a job for the retries (network trouble). Undefined
 * when it did not come in time or the challenge could no longer be settled from pending (another
 * POST started an attempt, the authorization changed, the account is over its limit): the caller then
 * goes the usual way, reusing `running`.
 */
export async function settleIfQuick(
  deps: AcmeDeps,
  facts: ChallengeFacts,
  running: Promise<ValidationOutcome>,
): Promise<ChallengeRow | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), AT_ONCE_GRACE_MS);
  });
  const outcome = await Promise.race([running, late]).finally(() => clearTimeout(timer));
  if (outcome === undefined) return undefined;
  const job: SettlingJob = { id: null, authzId: facts.authzId, type: facts.kind, accountId: facts.accountId };
  const now = deps.clock.now();
  const deadline = addMs(now, deps.config.validation.retryFor);
  const retry = isTransient(outcome, now, deadline);
  const settled = await settleOutcome(deps, job, facts.identifier.value, outcome, retry, (problem) =>
    queueRetry(deps, job, problem, addMs(now, retryDelay(deps, 1)), deadline),
  );
  if (settled) publishOutcome(facts, outcome, retry);
  return settled;
}
