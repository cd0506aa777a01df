import { type RawBuilder, sql } from 'kysely';

import { addMs } from '../core/clock.ts';
import type { AcmeChallengeType, AcmeProblemJson } from '../db/acme-schema.ts';
import { GroupCommit } from '../db/group-commit.ts';
import { precompiled } from '../db/precompiled.ts';
import { countHit, underLimit } from '../policy/index.ts';
import type { AcmeDeps } from './deps.ts';
import { randomId } from './ids.ts';
import { type AuthzRow, challengeOf, type ChallengeRow } from './views.ts';

export interface SettlingJob {
  /** The job holding the check; null for a check run at once in the challenge POST (no job yet). */
  id: string | null;
  authzId: string;
  /** The challenge being checked: its authorization's attempt. */
  type: AcmeChallengeType;
  accountId: string;
}

/**
 * The authorization a settle may change: the one whose attempt its job is checking or, for a
 * check run at once (no job), a pending one with no attempt yet, live and the account's, the
 * conditions under which a POST starts a validation. A failure also needs the account under its
 * failed-validations limit (otherwise the POST would not have started it).
 */
function settleable(deps: AcmeDeps, job: SettlingJob, now: Date, failure: boolean): RawBuilder<boolean> {
  if (job.id !== null)
    return sql<boolean>`status = 'pending' AND attempted = ${job.type} AND attempt_status = 'processing'`;
  const limit = failure ? underLimit(deps.limits.rule('failedValidationsPerAccount'), job.accountId, now) : sql`true`;
  return sql<boolean>`status = 'pending' AND attempted IS NULL AND expires > ${now} AND account_id = ${job.accountId}
    AND ${job.type} = ANY (challenge_types) AND ${limit}`;
}

/**
 * The pending order (the one that created the authorization: only valid ones are reused) turns
 * ready when all its authorizations are valid, each found by its primary key.
 */
const readyOrder = (orderId: RawBuilder<unknown>, now: Date, alsoValid: string | null) => sql`
  UPDATE acme_orders o SET status = 'ready', updated_at = ${now}
  WHERE o.id = (${orderId}) AND o.status = 'pending' AND o.expires > ${now}
    AND NOT EXISTS (
      SELECT 1 FROM acme_authzs a WHERE a.id = ANY (o.authz_ids)
        AND a.id IS DISTINCT FROM ${alsoValid}::text AND (a.status <> 'valid' OR a.expires <= ${now}))`;

/** The challenge as a settling statement left it (undefined: the statement changed nothing). */
const settled = (job: { type: AcmeChallengeType }, row: AuthzRow | undefined): ChallengeRow | undefined =>
  row && challengeOf(row, job.type);

// settleValid and settleInvalid run on connections that keep one plan per statement
// (DatabaseHandle.genericPlans): PostgreSQL planned them on every call otherwise.

/**
 * Challenge and authorization valid, job done, and the order turns ready if all its
 * authorizations are now valid: one statement (clients finalize as soon as they see a valid
 * challenge). The statement sees the order's other authorizations as of its start, so when it has
 * several, two of them settling at once could each miss the other's: the check runs again after
 * the commit. The later of the two re-checks starts after both commits and sees both, so the
 * order can't be left pending with every authorization valid.
 */
export async function settleValid(deps: AcmeDeps, job: SettlingJob, holder: string): Promise<ChallengeRow | undefined> {
  if (job.id === null) return settled(job, await validAtOnce(deps).submit(job));
  const now = deps.clock.now();
  const { rows } = await sql<AuthzRow & { shared: boolean }>`
    WITH authz AS (
      UPDATE acme_authzs SET status = 'valid', validated_at = ${now}, attempted = ${job.type},
        attempt_status = 'valid', attempt_error = NULL, expires = ${addMs(now, deps.config.acme.authorizationLifetime)}
      WHERE id = ${job.authzId} AND ${settleable(deps, job, now, false)} RETURNING *),
    job AS (
      UPDATE acme_jobs SET status = 'done', finished_at = ${now}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder}),
    ready AS (${readyOrder(sql`SELECT order_id FROM authz`, now, job.authzId)})
    SELECT authz.*, EXISTS (
      SELECT 1 FROM acme_orders o WHERE o.id = authz.order_id AND cardinality(o.authz_ids) > 1) AS shared
    FROM authz`.execute(deps.genericPlans);
  const row = rows[0];
  if (row?.shared && row.order_id !== null) await readyOrder(sql`${row.order_id}::text`, now, null).execute(deps.db);
  return settled(job, row);
}

/**
 * Checks run at once that passed, group-committed: the challenge POSTs whose checks pass while a
 * batch is being written go together in the next statement (db/group-commit.ts), each under the
 * conditions of `settleable` for a POST's own check. A second check of the same authorization in
 * a batch is answered as if it had lost the race (nothing settled). The orders re-checked after
 * the commit are those with several authorizations, as settleValid does.
 */
function validAtOnce(deps: AcmeDeps): GroupCommit<SettlingJob, AuthzRow | undefined> {
  let group = atOnce.get(deps);
  if (!group) {
    group = new GroupCommit<SettlingJob, AuthzRow | undefined>(async (jobs) => {
      const now = deps.clock.now();
      const first = jobs.map((j, i) => jobs.findIndex((k) => k.authzId === j.authzId) === i);
      const sent = jobs.filter((_, i) => first[i]);
      const rows = await validBatch(
        deps.genericPlans,
        sent.map((j) => j.authzId),
        sent.map((j) => j.type),
        sent.map((j) => j.accountId),
        now,
        addMs(now, deps.config.acme.authorizationLifetime),
      );
      const byId = new Map<string, AuthzRow>(rows.map((r) => [r.id, r]));
      await Promise.all(
        rows
          .filter((r) => r.shared && r.order_id !== null)
          .map((r) => readyOrder(sql`${r.order_id}::text`, now, null).execute(deps.db)),
      );
      return jobs.map((j, i) => (first[i] ? byId.get(j.authzId) : undefined));
    });
    atOnce.set(deps, group);
  }
  return group;
}
const atOnce = new WeakMap<AcmeDeps, GroupCommit<SettlingJob, AuthzRow | undefined>>();

// Built and compiled once (db/precompiled.ts): it runs for nearly every challenge.
const validBatch = precompiled(
  (db, authzIds: string[], types: string[], accountIds: string[], now: Date, expires: Date) =>
    sql<AuthzRow & { shared: boolean }>`
      WITH req AS (
        SELECT * FROM unnest(${authzIds}::text[], ${types}::text[], ${accountIds}::text[]) AS r (authz_id, type, account_id)),
      authz AS (
        UPDATE acme_authzs a SET status = 'valid', validated_at = ${now}, attempted = r.type, attempt_status = 'valid',
          attempt_error = NULL, expires = ${expires}
        FROM req r
        WHERE a.id = r.authz_id AND a.status = 'pending' AND a.attempted IS NULL AND a.expires > ${now}
          AND a.account_id = r.account_id AND r.type = ANY (a.challenge_types)
        RETURNING a.*),
      ready AS (
        UPDATE acme_orders o SET status = 'ready', updated_at = ${now}
        WHERE o.id IN (SELECT order_id FROM authz) AND o.status = 'pending' AND o.expires > ${now}
          AND NOT EXISTS (
            SELECT 1 FROM acme_authzs x WHERE x.id = ANY (o.authz_ids)
              AND x.id NOT IN (SELECT id FROM authz) AND (x.status <> 'valid' OR x.expires <= ${now})))
      SELECT authz.*, EXISTS (
        SELECT 1 FROM acme_orders o WHERE o.id = authz.order_id AND cardinality(o.authz_ids) > 1) AS shared
      FROM authz`.compile(db),
);

/**
 * Challenge, authorization and the pending order that created it turn invalid with the reason,
 * the failure counts against the account (so a client stuck in a failing loop is slowed), and the
 * job is done: one statement.
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
  const { rows } = await sql<AuthzRow>`
    WITH authz AS (
      UPDATE acme_authzs SET status = 'invalid', attempted = ${job.type}, attempt_status = 'invalid',
        attempt_error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.authzId} AND ${settleable(deps, job, now, true)} RETURNING *),
    counted AS (${countHit(deps.limits.rule('failedValidationsPerAccount'), job.accountId, now, sql<boolean>`EXISTS (SELECT 1 FROM authz)`)}),
    orders AS (
      UPDATE acme_orders SET status = 'invalid', updated_at = ${now}, error = ${JSON.stringify(orderError)}::jsonb
      WHERE id = (SELECT order_id FROM authz) AND status = 'pending'),
    job AS (
      UPDATE acme_jobs SET status = 'done', finished_at = ${now}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder})
    SELECT * FROM authz`.execute(deps.genericPlans);
  return settled(job, rows[0]);
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
  const { rows } = await sql<AuthzRow>`
    WITH authz AS (
      UPDATE acme_authzs SET attempted = ${job.type}, attempt_status = 'processing',
        attempt_error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.authzId} AND ${settleable(deps, job, now, true)} RETURNING *),
    job AS (
      INSERT INTO acme_jobs (id, authz_id, status, run_at, deadline, attempts, created_at)
      SELECT ${randomId()}, id, 'queued', ${runAt}, ${deadline}, 1, ${now} FROM authz)
    SELECT * FROM authz`.execute(deps.db);
  return settled(job, rows[0]);
}

/** A failed attempt with time left: the challenge stays processing and shows the latest error. */
export async function scheduleRetry(
  deps: AcmeDeps,
  job: { id: string; authzId: string; type: AcmeChallengeType },
  problem: AcmeProblemJson,
  runAt: Date,
  holder: string,
): Promise<ChallengeRow | undefined> {
  const { rows } = await sql<AuthzRow>`
    WITH authz AS (
      UPDATE acme_authzs SET attempt_error = ${JSON.stringify(problem)}::jsonb
      WHERE id = ${job.authzId} AND attempted = ${job.type} AND attempt_status = 'processing' RETURNING *),
    job AS (
      UPDATE acme_jobs SET run_at = ${runAt}, lease_holder = NULL, lease_until = NULL
      WHERE id = ${job.id} AND lease_holder = ${holder})
    SELECT * FROM authz`.execute(deps.db);
  return settled(job, rows[0]);
}
