import { type RawBuilder, sql } from 'kysely';

import { addMs } from '../core/clock.ts';
import type { AcmeProblemJson } from '../db/acme-schema.ts';
import { countHit, underLimit } from '../policy/index.ts';
import type { AcmeDeps } from './deps.ts';
import { randomId } from './ids.ts';
import type { ChallengeRow } from './views.ts';

export interface SettlingJob {
  /** The job holding the check; null for a check run at once in the challenge POST (no job yet). */
  id: string | null;
  challengeId: string;
  authzId: string;
  accountId: string;
}

/**
 * The challenge a settle may change: the one its job is processing or, for a check run at once
 * (no job), a pending one whose authorization is pending, live and the account's, the conditions
 * under which a POST starts a validation. A failure also needs the account under its
 * failed-validations limit (otherwise the POST would not have started it).
 */
function settleable(deps: AcmeDeps, job: SettlingJob, now: Date, failure: boolean): RawBuilder<boolean> {
  if (job.id !== null) return sql<boolean>`status = 'processing'`;
  const limit = failure ? underLimit(deps.limits.rule('failedValidationsPerAccount'), job.accountId, now) : sql`true`;
  return sql<boolean>`status = 'pending' AND EXISTS (SELECT 1 FROM acme_authzs a WHERE a.id = ${job.authzId}
    AND a.status = 'pending' AND a.expires > ${now} AND a.account_id = ${job.accountId}) AND ${limit}`;
}

/**
 * The orders using an authorization, as an array so that each is then found by its primary key
 * (a plan that doesn't depend on column statistics a fresh database lacks).
 */
const ordersUsing = (authzId: string) => sql`ARRAY(SELECT order_id FROM acme_order_authzs WHERE authz_id = ${authzId})`;

/** Pending orders using the authorization whose authorizations are all valid turn ready. */
const readyOrders = (authzId: string, now: Date, alsoValid: string | null) => sql`
  UPDATE acme_orders o SET status = 'ready', updated_at = ${now}
  WHERE o.id = ANY (${ordersUsing(authzId)}) AND o.status = 'pending' AND o.expires > ${now}
    AND NOT EXISTS (
      SELECT 1 FROM acme_authzs a WHERE a.id = ANY (o.authz_ids)
        AND a.id IS DISTINCT FROM ${alsoValid}::text AND (a.status <> 'valid' OR a.expires <= ${now}))`;

/**
 * Challenge valid, authorization valid, job done, and the orders whose authorizations are now all
 * valid turn ready: one statement (clients finalize as soon as they see a valid challenge). The
 * statement sees the other authorizations as of its start, so when the order has several, two of
 * them settling at once could each miss the other's: the check runs again after the commit. The
 * later of the two re-checks starts after both commits and sees both, so the order can't be left
 * pending with every authorization valid.
 */
export async function settleValid(deps: AcmeDeps, job: SettlingJob, holder: string): Promise<ChallengeRow | undefined> {
  const now = deps.clock.now();
  const { rows } = await sql<ChallengeRow & { settled: boolean; shared: boolean }>`
    WITH ch AS (
      UPDATE acme_challenges SET status = 'valid', validated = ${now}, error = NULL
      WHERE id = ${job.challengeId} AND ${settleable(deps, job, now, false)} RETURNING *),
    authz AS (
      UPDATE acme_authzs SET status = 'valid', validated_at = ${now}, validated_by = (SELECT type FROM ch),
        expires = ${addMs(now, deps.config.acme.authorizationLifetime)}
      WHERE id = ${job.authzId} AND status = 'pending' AND EXISTS (SELECT 1 FROM ch) RETURNING id),
    job AS (
      UPDATE acme_jobs SET status = 'done', finished_at = ${now}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder}),
    ready AS (${readyOrders(job.authzId, now, job.authzId)} AND EXISTS (SELECT 1 FROM authz))
    SELECT ch.*, EXISTS (SELECT 1 FROM authz) AS settled, EXISTS (
      SELECT 1 FROM acme_orders o WHERE o.id = ANY (${ordersUsing(job.authzId)}) AND cardinality(o.authz_ids) > 1) AS shared
    FROM ch`.execute(deps.db);
  const row = rows[0];
  if (!row) return undefined;
  const { settled, shared, ...challenge } = row;
  if (settled && shared) await readyOrders(job.authzId, now, null).execute(deps.db);
  return challenge;
}

/**
 * Challenge, authorization and the pending orders using it turn invalid with the reason, the
 * failure counts against the account (so a client stuck in a failing loop is slowed), and the job
 * is done: one statement.
 */
export async function settleInvalid(
  deps: AcmeDeps,
  job: SettlingJob & { identifier: string },
  problem: AcmeProblemJson,
  holder: string,
): Promise<ChallengeRow | undefined> {
  const now = deps.clock.now();
  const orderError: AcmeProblemJson = {
    type: problem.type,
    detail: `Validation of ${job.identifier} failed: ${problem.detail}`,
    status: problem.status ?? 400,
  };
  const { rows } = await sql<ChallengeRow>`
    WITH ch AS (
      UPDATE acme_challenges SET status = 'invalid', error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.challengeId} AND ${settleable(deps, job, now, true)} RETURNING *),
    authz AS (
      UPDATE acme_authzs SET status = 'invalid'
      WHERE id = ${job.authzId} AND status = 'pending' AND EXISTS (SELECT 1 FROM ch) RETURNING id),
    counted AS (${countHit(deps.limits.rule('failedValidationsPerAccount'), job.accountId, now, sql<boolean>`EXISTS (SELECT 1 FROM authz)`)}),
    orders AS (
      UPDATE acme_orders SET status = 'invalid', updated_at = ${now}, error = ${JSON.stringify(orderError)}::jsonb
      WHERE id = ANY (${ordersUsing(job.authzId)}) AND status = 'pending' AND EXISTS (SELECT 1 FROM ch)),
    job AS (
      UPDATE acme_jobs SET status = 'done', finished_at = ${now}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder})
    SELECT * FROM ch`.execute(deps.db);
  return rows[0];
}

/**
 * A check run at once failed for network reasons: the challenge turns processing with the error,
 * and a job (held by no one) carries the retries, as if it had been started the usual way.
 */
export async function queueRetry(
  deps: AcmeDeps,
  job: SettlingJob,
  problem: AcmeProblemJson,
  runAt: Date,
  deadline: Date,
): Promise<ChallengeRow | undefined> {
  const now = deps.clock.now();
  const { rows } = await sql<ChallengeRow>`
    WITH ch AS (
      UPDATE acme_challenges SET status = 'processing', error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.challengeId} AND ${settleable(deps, job, now, true)} RETURNING *),
    job AS (
      INSERT INTO acme_jobs (id, challenge_id, status, run_at, deadline, attempts, created_at)
      SELECT ${randomId()}, id, 'queued', ${runAt}, ${deadline}, 1, ${now} FROM ch)
    SELECT * FROM ch`.execute(deps.db);
  return rows[0];
}

/** A failed attempt with time left: the challenge stays processing and shows the latest error. */
export async function scheduleRetry(
  deps: AcmeDeps,
  job: { id: string; challengeId: string },
  problem: AcmeProblemJson,
  runAt: Date,
  holder: string,
): Promise<ChallengeRow | undefined> {
  const { rows } = await sql<ChallengeRow>`
    WITH ch AS (
      UPDATE acme_challenges SET error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.challengeId} AND status = 'processing' RETURNING *),
    job AS (
      UPDATE acme_jobs SET run_at = ${runAt}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder})
    SELECT * FROM ch`.execute(deps.db);
  return rows[0];
}
