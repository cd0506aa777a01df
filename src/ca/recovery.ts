import { sql } from 'kysely';

import { type BackgroundLoop, type LoopLogger, startLoop } from '../core/background-loop.ts';
import { withLease } from '../db/lease.ts';
import type { Db, Executor } from '../db/schema.ts';

export interface AbandonedReservation {
  serial: string;
  requester: string;
  /** The serial had been signed (a sign-certificate audit event names it): a certificate that was never stored or delivered. */
  signed: boolean;
}

/**
 * Crash recovery of issuance (serial first, so no signed certificate goes unrecorded): a reservation older than
 * `olderThanMs` with no certificate belongs to an issuance that died between reserving and
 * storing (kill -9, a lost database connection, a refused signature). It is marked `abandoned`,
 * keeping from the audit log whether its serial was signed, so the record says what happened to
 * every serial. One statement; the audit lookup runs only for the (rare) reservations abandoned.
 */
export async function abandonStaleReservations(db: Executor, olderThanMs: number): Promise<AbandonedReservation[]> {
  const { rows } = await sql<AbandonedReservation>`
    UPDATE serial_reservations r SET status = 'abandoned', abandoned_at = now(),
      signed = EXISTS (
        SELECT 1 FROM audit_events e JOIN issuers i ON i.key_id = e.key_id
        WHERE i.id = r.issuer_id AND e.action = 'sign-certificate' AND e.outcome = 'success'
          AND e.ts >= r.created_at AND e.context->>'serial' = r.serial)
    WHERE r.status = 'reserved' AND r.created_at < now() - make_interval(secs => ${olderThanMs / 1000})
      AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = r.serial)
    RETURNING r.serial, r.requester, r.signed`.execute(db);
  return rows;
}

/**
 * Runs the sweep when the server starts and every `intervalMs` after, on one replica at a time;
 * each abandoned serial is logged (a signed one at warn: a certificate exists that nobody has).
 */
export function startReservationRecovery(
  db: Db,
  log: LoopLogger,
  opts: { abandonAfterMs: number; intervalMs: number; holder: string },
): BackgroundLoop {
  return startLoop({
    name: 'reservation recovery',
    intervalMs: opts.intervalMs,
    log,
    run: async () => {
      const leaseMs = Math.max(2 * opts.intervalMs, 5_000);
      const abandoned = await withLease(db, 'reservation-recovery', opts.holder, leaseMs, () =>
        abandonStaleReservations(db, opts.abandonAfterMs),
      );
      for (const r of abandoned ?? []) {
        const line = { serial: r.serial, requester: r.requester, signed: r.signed };
        if (r.signed) log.warn(line, 'abandoned a reservation whose certificate was signed but never stored');
        else log.info(line, 'abandoned a reservation that was never signed');
      }
    },
  });
}
