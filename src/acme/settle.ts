import { sql } from 'kysely';

import type { AcmeProblemJson } from '../db/acme-schema.ts';
import type { Executor } from '../db/schema.ts';
import { addMs } from './clock.ts';
import type { AcmeDeps } from './deps.ts';

/**
 * Locks the orders that use an authorization, in a fixed order, so that two challenges of one
 * order settling at once serialise: the second sees the first's valid authorization and turns the
 * order ready. Without it both could see the other still pending and leave the order stuck.
 */
async function lockOrders(trx: Executor, authzId: string): Promise<void> {
  await sql`SELECT id FROM acme_orders WHERE id IN (SELECT order_id FROM acme_order_authzs WHERE authz_id = ${authzId}) ORDER BY id FOR UPDATE`.execute(
    trx,
  );
}

async function finishJob(trx: Executor, jobId: string, holder: string, now: Date): Promise<void> {
  await trx
    .updateTable('acme_jobs')
    .set({ status: 'done', finished_at: now, lease_holder: null, lease_until: null })
    .where('id', '=', jobId)
    .where('lease_holder', '=', holder)
    .execute();
}

/**
 * Challenge valid, authorization valid, and every order whose authorizations are now all valid
 * turns ready in the same transaction (clients finalize as soon as they see a valid challenge).
 */
export async function settleValid(
  deps: AcmeDeps,
  job: { id: string; challengeId: string; authzId: string },
  holder: string,
): Promise<void> {
  const now = deps.clock.now();
  await deps.db.transaction().execute(async (trx) => {
    await lockOrders(trx, job.authzId);
    const { rows } = await sql<{ settled: boolean }>`
      WITH ch AS (
        UPDATE acme_challenges SET status = 'valid', validated = ${now}, error = NULL
        WHERE id = ${job.challengeId} AND status = 'processing' RETURNING id),
      authz AS (
        UPDATE acme_authzs SET status = 'valid', validated_at = ${now}, expires = ${addMs(now, deps.ctx.config.acme.authorizationLifetime)}
        WHERE id = ${job.authzId} AND status = 'pending' AND EXISTS (SELECT 1 FROM ch)),
      job AS (
        UPDATE acme_jobs SET status = 'done', finished_at = ${now}, lease_holder = NULL, lease_until = NULL
        WHERE id = ${job.id} AND lease_holder = ${holder})
      SELECT EXISTS (SELECT 1 FROM ch) AS settled`.execute(trx);
    // A later statement, so it sees the authorization the one above made valid.
    if (rows[0]?.settled) {
      await sql`
        UPDATE acme_orders o SET status = 'ready', updated_at = ${now}
        WHERE o.status = 'pending' AND o.expires > ${now}
          AND o.id IN (SELECT order_id FROM acme_order_authzs WHERE authz_id = ${job.authzId})
          AND NOT EXISTS (
            SELECT 1 FROM acme_order_authzs oa JOIN acme_authzs a ON a.id = oa.authz_id
            WHERE oa.order_id = o.id AND (a.status <> 'valid' OR a.expires <= ${now}))`.execute(trx);
    }
  });
}

/** Challenge, authorization and the pending orders using it all turn invalid, with the reason. */
export async function settleInvalid(
  deps: AcmeDeps,
  job: { id: string; challengeId: string; authzId: string; identifier: string },
  problem: AcmeProblemJson,
  holder: string,
): Promise<void> {
  const now = deps.clock.now();
  await deps.db.transaction().execute(async (trx) => {
    await lockOrders(trx, job.authzId);
    const ch = await trx
      .updateTable('acme_challenges')
      .set({ status: 'invalid', error: JSON.stringify(problem) })
      .where('id', '=', job.challengeId)
      .where('status', '=', 'processing')
      .returning('id')
      .executeTakeFirst();
    if (ch) {
      const authz = await trx
        .updateTable('acme_authzs')
        .set({ status: 'invalid' })
        .where('id', '=', job.authzId)
        .where('status', '=', 'pending')
        .returning('account_id')
        .executeTakeFirst();
      // Counted against the account so a client stuck in a failing loop is slowed (rateLimited).
      if (authz) await deps.limits.consume(trx, 'failedValidationsPerAccount', authz.account_id, now);
      const orderError: AcmeProblemJson = {
        type: problem.type,
        detail: `Validation of ${job.identifier} failed: ${problem.detail}`,
        status: problem.status ?? 400,
      };
      await trx
        .updateTable('acme_orders')
        .set({ status: 'invalid', updated_at: now, error: JSON.stringify(orderError) })
        .where('status', '=', 'pending')
        .where('id', 'in', trx.selectFrom('acme_order_authzs').select('order_id').where('authz_id', '=', job.authzId))
        .execute();
    }
    await finishJob(trx, job.id, holder, now);
  });
}

/** A failed attempt with time left: the challenge stays processing and shows the latest error. */
export async function scheduleRetry(
  deps: AcmeDeps,
  job: { id: string; challengeId: string },
  problem: AcmeProblemJson,
  runAt: Date,
  holder: string,
): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    await trx
      .updateTable('acme_challenges')
      .set({ error: JSON.stringify(problem) })
      .where('id', '=', job.challengeId)
      .where('status', '=', 'processing')
      .execute();
    await trx
      .updateTable('acme_jobs')
      .set({ run_at: runAt, lease_holder: null, lease_until: null })
      .where('id', '=', job.id)
      .where('lease_holder', '=', holder)
      .execute();
  });
}
