import { sql } from 'kysely';

import { type BackgroundLoop, type LoopLogger, startLoop } from '../core/background-loop.ts';
import { withLease } from '../db/lease.ts';
import type { Db, Executor } from '../db/schema.ts';

export interface AbandonedReservation {
  serial: string;
  requester: string;
  /**
   * The key use for this serial was authorised (a sign-certificate event names it, and no failure
   * event says its signature was never made): the certificate may have been signed, in the
   * process that died, but it was never stored or delivered. False: it was certainly not signed.
   */
  signed: boolean;
}

/**
 * Crash recovery of issuance (serial first, so no signed certificate goes unrecorded): a reservation older than
 * `olderThanMs` with no certificate belongs to an issuance that died between reserving and
 * storing (kill -9, a lost database connection, a refused signature). It is marked `abandoned`,
 * keeping from the audit log whether its serial's key use was authorised (the event is committed
 * before the signature is made, with the reservation), so the record says what may have happened
 * to every serial. One statement; the audit lookup runs only for the (rare) reservations abandoned.
 * The event's time is the appending process's clock, read just before the statement that also
 * writes the reservation (whose time is the database's): the window allows for the two clocks.
 * The look-up walks the key's events by sequence (audit_events_key), from the last checkpoint
 * made an hour before the reservation (both times the database's, so every event appended after
 * that checkpoint, the reservation's among them, is after its seq): the events of the hours
 * around a crash, not the whole log. A failure event comes after the authorisation it names.
 */
export async function abandonStaleReservations(db: Executor, olderThanMs: number): Promise<AbandonedReservation[]> {
  const { rows } = await sql<AbandonedReservation>`
    UPDATE serial_reservations r SET status = 'abandoned', abandoned_at = now(),
      signed = EXISTS (
        SELECT 1 FROM audit_events e JOIN issuers i ON i.key_id = e.key_id
        WHERE i.id = r.issuer_id AND e.action = 'sign-certificate' AND e.outcome = 'success'
          AND e.seq > coalesce((
            SELECT c.seq FROM audit_checkpoints c WHERE c.ts < r.created_at - interval '1 hour'
            ORDER BY c.seq DESC LIMIT 1), 0)
          AND e.ts >= r.created_at - interval '1 hour' AND e.context->>'serial' = r.serial
          AND NOT EXISTS (
            SELECT 1 FROM audit_events f
            WHERE f.key_id = e.key_id AND f.seq > e.seq AND f.action = 'sign-certificate'
              AND f.outcome = 'failure' AND f.context->>'authorized' = e.seq::text))
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
        if (r.signed)
          log.warn(line, 'abandoned a reservation whose certificate may have been signed but was never stored');
        else log.info(line, 'abandoned a reservation that was never signed');
      }
    },
  });
}
