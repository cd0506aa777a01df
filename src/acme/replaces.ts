import { sql } from 'kysely';

import type { ReplacedCertificate, Replaces } from '../issuance/index.ts';
import type { AcmeDeps } from './deps.ts';

/**
 * What a `replaces` value (RFC 9773) names, for the issuance decision (src/issuance/replaces.ts):
 * the certificate with that serial, its issuer, and a live order that already replaces it. One
 * statement.
 */
export async function replacedCertificate(
  deps: AcmeDeps,
  replaces: Replaces,
): Promise<ReplacedCertificate | undefined> {
  const row = await deps.db
    .selectFrom('certificates as c')
    .innerJoin('issuers as i', 'i.id', 'c.issuer_id')
    .select(['c.requester', 'c.sans', 'i.id as issuer_id', 'i.certificate as issuer_certificate'])
    .select(
      sql<
        string | null
      >`(SELECT id FROM acme_orders WHERE replaces = ${replaces.text} AND status != 'invalid' LIMIT 1)`.as(
        'replaced_by',
      ),
    )
    .where('c.serial', '=', replaces.certId.serial)
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    requester: row.requester,
    sans: row.sans,
    issuerId: row.issuer_id,
    issuerCertificate: row.issuer_certificate,
    ...(row.replaced_by ? { replacedBy: deps.urls.order(row.replaced_by) } : {}),
  };
}
