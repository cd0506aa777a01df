import { sql } from 'kysely';

import { KeywardError } from '../core/errors.ts';
import { events } from '../core/events.ts';
import { normalizeSerial } from '../core/serial.ts';
import type { Db } from '../db/schema.ts';
import type { AuditLog } from '../kms/index.ts';
import { ALLOWED_REASONS, reasonName, REVOCATION_REASONS } from './revocation-reasons.ts';

export { allowedReasonNames, reasonCode, type ReasonName, reasonName } from './revocation-reasons.ts';

/** NOTIFY channel on which a committed revocation names its serial (OCSP caches listen). */
export const REVOCATION_CHANNEL = 'keyward_revoked';

export interface Revocation {
  serial: string;
  revokedAt: Date;
  reason: number;
  issuerId: string;
}

/**
 * The one revocation path (ACME revokeCert, `keyward revoke`). A conditional update makes a second
 * revocation an error that changes nothing; keyCompromise also blocks the public key. The CRL of the
 * certificate's shard is marked stale and its cached OCSP answer dropped in the same unit of work.
 */
export async function revokeCertificate(
  db: Db,
  audit: AuditLog,
  input: { serial: string; reason: number; requester: string },
): Promise<Revocation> {
  if (!ALLOWED_REASONS.has(input.reason)) {
    throw new KeywardError(
      'badRevocationReason',
      `revocation reason ${input.reason} is not accepted (allowed: ${[...ALLOWED_REASONS].join(', ')})`,
    );
  }
  const serial = normalizeSerial(input.serial);
  const revoked = await db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable('certificates')
      .set({ status: 'revoked', revoked_at: sql<Date>`date_trunc('second', now())`, revocation_reason: input.reason })
      .where('serial', '=', serial)
      .where('status', '=', 'valid')
      .returning(['serial', 'revoked_at', 'issuer_id', 'crl_shard', 'spki_sha256'])
      .executeTakeFirst();
    if (!row) {
      const existing = await trx
        .selectFrom('certificates')
        .select(['status', 'revoked_at'])
        .where('serial', '=', serial)
        .executeTakeFirst();
      if (!existing) throw new KeywardError('notFound', `no certificate with serial ${input.serial}`);
      throw new KeywardError(
        'alreadyRevoked',
        `certificate ${serial} was already revoked at ${existing.revoked_at?.toISOString()}`,
      );
    }
    if (input.reason === REVOCATION_REASONS.keyCompromise) {
      await trx
        .insertInto('blocked_keys')
        .values({ spki_sha256: row.spki_sha256, reason: 'keyCompromise', source_serial: serial })
        .onConflict((oc) => oc.column('spki_sha256').doNothing())
        .execute();
    }
    await trx
      .insertInto('crls')
      .values({
        issuer_id: row.issuer_id,
        shard: row.crl_shard,
        crl_number: 0,
        der: null,
        this_update: null,
        next_update: null,
        stale_since: sql<Date>`now()`,
      })
      .onConflict((oc) =>
        oc.columns(['issuer_id', 'shard']).doUpdateSet({ stale_since: sql<Date>`coalesce(crls.stale_since, now())` }),
      )
      .execute();
    // Every replica drops its in-memory answer for this serial when the revocation commits.
    await sql`WITH dropped AS (DELETE FROM ocsp_responses WHERE serial = ${serial})
      SELECT pg_notify(${REVOCATION_CHANNEL}, ${serial})`.execute(trx);
    await audit.append(trx, {
      principal: input.requester,
      action: 'revoke-certificate',
      outcome: 'success',
      context: { serial, reason: reasonName(input.reason), issuer: row.issuer_id },
    });
    return { serial, revokedAt: row.revoked_at!, reason: input.reason, issuerId: row.issuer_id };
  });
  events.certificateRevoked.publish({
    serial,
    issuerId: revoked.issuerId,
    reason: reasonName(revoked.reason),
    requester: input.requester,
  });
  return revoked;
}
