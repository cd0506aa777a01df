import { sql } from 'kysely';

import { addMs } from '../core/clock.ts';
import { withLease } from '../db/lease.ts';
import type { AcmeDeps } from './deps.ts';

const DAY = 86_400_000;
/** Finished jobs are only kept for debugging a recent validation. */
const JOB_RETENTION_MS = 3_600_000;
/** Orders (and the authorizations only they use) are kept this long after they expire. */
const ORDER_RETENTION_MS = 30 * DAY;
/** Issuing takes seconds; an order processing much longer lost its replica mid-issue. */
const STUCK_PROCESSING_MS = 10 * 60_000;

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
  const stuck = await db
    .updateTable('acme_orders')
    .set({
      status: 'invalid',
      updated_at: now,
      error: JSON.stringify({
        type: 'urn:ietf:params:acme:error:serverInternal',
        detail: 'Issuance was interrupted; place a new order',
        status: 500,
      }),
    })
    .where('status', '=', 'processing')
    .where('updated_at', '<', addMs(now, -STUCK_PROCESSING_MS))
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
  const authzs = await sql`
    DELETE FROM acme_authzs a WHERE a.expires < ${addMs(now, -ORDER_RETENTION_MS)}
      AND NOT EXISTS (SELECT 1 FROM acme_order_authzs oa WHERE oa.authz_id = a.id)`.execute(db);
  return {
    nonces: Number(nonces.numDeletedRows),
    jobs: Number(jobs.numDeletedRows),
    stuck: Number(stuck.numUpdatedRows),
    orders: Number(orders.numDeletedRows),
    authzs: Number(authzs.numAffectedRows ?? 0),
  };
}

export function startJanitor(deps: AcmeDeps, holder: string, intervalMs = 60_000): { stop(): Promise<void> } {
  let current: Promise<unknown> = Promise.resolve();
  const tick = () => {
    current = withLease(deps.db, 'acme-janitor', holder, intervalMs * 2, () => sweep(deps)).catch((err: unknown) =>
      deps.log.warn({ err: (err as Error).message }, 'ACME janitor sweep failed'),
    );
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await current;
    },
  };
}
