import { sql } from 'kysely';

import { startLoop } from '../core/background-loop.ts';
import { addMs } from '../core/clock.ts';
import { withLease } from '../db/lease.ts';
import type { AcmeDeps } from './deps.ts';

const DAY = 86_400_000;
/** Finished jobs are only kept for debugging a recent validation. */
const JOB_RETENTION_MS = 3_600_000;
/** Orders (and the authorizations only they use) are kept this long after they expire. */
const ORDER_RETENTION_MS = 30 * DAY;

export interface JanitorReport {
  nonces: number;
  jobs: number;
  orders: number;
  authzs: number;
  stuck: number;
}

/** One sweep; safe to run anywhere, but `startJanitor` makes sure only one replica does at a time. */
export async function sweep(deps: AcmeDeps): Promise<JanitorReport> {
  const db = deps.db;
  const now = deps.clock.now();
  const nonces = await db.deleteFrom('acme_spent_nonces').where('expires_at', '<', now).executeTakeFirst();
  const jobs = await db
    .deleteFrom('acme_jobs')
    .where('status', '=', 'done')
    .where('finished_at', '<', addMs(now, -JOB_RETENTION_MS))
    .executeTakeFirst();
  // Issuing takes seconds; an order processing longer than recovery.abandonAfter lost its replica
  // mid-issue (its certificate, stored with the order's valid status in one transaction, was not).
  // Back to ready, so the client's retry of finalize issues (RFC 8555 §7.4 lets it finalize a
  // ready order); its reservation is given up by the CA's own recovery sweep.
  const stuck = await db
    .updateTable('acme_orders')
    .set({ status: 'ready', updated_at: now })
    .where('status', '=', 'processing')
    .where('certificate_serial', 'is', null)
    .where('updated_at', '<', addMs(now, -deps.config.recovery.abandonAfter))
    .executeTakeFirst();
  await db
    .updateTable('acme_orders')
    .set({
      status: 'invalid',
      updated_at: now,
      error: JSON.stringify({ type: 'urn:ietf:params:acme:error:malformed', detail: 'The order expired', status: 400 }),
    })
    .where('status', 'in', ['pending', 'ready'])
    .where('expires', '<=', now)
    .execute();
  const orders = await db
    .deleteFrom('acme_orders')
    .where('expires', '<', addMs(now, -ORDER_RETENTION_MS))
    .executeTakeFirst();
  // An order using an authorization is its account's, made while the authorization was live.
  const authzs = await sql`
    DELETE FROM acme_authzs a WHERE a.expires < ${addMs(now, -ORDER_RETENTION_MS)}
      AND NOT EXISTS (
        SELECT 1 FROM acme_orders o WHERE o.account_id = a.account_id
          AND o.created_at >= a.created_at AND o.created_at <= a.expires AND a.id = ANY (o.authz_ids))`.execute(db);
  return {
    nonces: Number(nonces.numDeletedRows),
    jobs: Number(jobs.numDeletedRows),
    stuck: Number(stuck.numUpdatedRows),
    orders: Number(orders.numDeletedRows),
    authzs: Number(authzs.numAffectedRows ?? 0),
  };
}

/** Sweeps at start (orders a crash left processing go back to ready) and every interval after. */
export function startJanitor(deps: AcmeDeps, holder: string, intervalMs = 60_000): { stop(): Promise<void> } {
  const every = Math.min(intervalMs, deps.config.recovery.interval);
  // A replica killed mid-sweep holds the lease until it expires: two intervals, at least 5 s.
  const leaseMs = Math.max(2 * every, 5_000);
  const loop = startLoop({
    name: 'ACME janitor',
    intervalMs: every,
    log: deps.log,
    run: async () => {
      const report = await withLease(deps.db, 'acme-janitor', holder, leaseMs, () => sweep(deps));
      if (report?.stuck) deps.log.warn({ orders: report.stuck }, 'orders left processing by a crash are ready again');
    },
  });
  return { stop: () => loop.stop() };
}
