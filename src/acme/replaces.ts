import { type AriCertId, parseAriCertId } from '../ca/ari.ts';
import { parseIssuerCertificate } from '../ca/issuer-certificate.ts';
import { bytesEqual } from '../core/bytes.ts';
import { KeywardError } from '../core/errors.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';

// Issuer ids are digests of their certificates, so an id always names the same key identifier.
const keyIds = new Map<string, Uint8Array>();
function issuerKeyIdentifier(issuerId: string, der: Uint8Array): Uint8Array {
  let id = keyIds.get(issuerId);
  if (!id) {
    id = parseIssuerCertificate(der).keyIdentifier;
    keyIds.set(issuerId, id);
  }
  return id;
}

/**
 * RFC 9773 §5: `replaces` names a certificate of this account (by ARI CertID) that shares a name
 * with the new order and has not been replaced by another live order already.
 */
export async function checkReplaces(
  deps: AcmeDeps,
  account: AccountRow,
  identifiers: AcmeIdentifierJson[],
  value: unknown,
): Promise<string> {
  if (typeof value !== 'string') throw new KeywardError('malformed', '"replaces" must be a string');
  // Canonical encoding only (parseAriCertId): one certificate has exactly one certID string, so
  // the "already replaced" check below can compare strings.
  let certId: AriCertId;
  try {
    certId = parseAriCertId(value);
  } catch (err) {
    throw new KeywardError('malformed', `"replaces" is not an ARI certificate identifier (${(err as Error).message})`);
  }
  // Both halves name the certificate (RFC 9773 §4.1): the serial and its issuer's key identifier.
  const cert = await deps.db
    .selectFrom('certificates as c')
    .innerJoin('issuers as i', 'i.id', 'c.issuer_id')
    .select(['c.serial', 'c.requester', 'c.sans', 'i.id as issuer_id', 'i.certificate as issuer_certificate'])
    .where('c.serial', '=', certId.serial)
    .executeTakeFirst();
  if (!cert || !bytesEqual(issuerKeyIdentifier(cert.issuer_id, cert.issuer_certificate), certId.keyIdentifier))
    throw new KeywardError('malformed', '"replaces" names a certificate this CA did not issue');
  if (cert.requester !== `acme:${account.id}`)
    throw new KeywardError('unauthorized', '"replaces" names a certificate of another account');
  const names = new Set([...cert.sans.dns.map((n) => `dns:${n}`), ...cert.sans.ip.map((n) => `ip:${n}`)]);
  if (!identifiers.some((id) => names.has(`${id.type}:${id.value}`)))
    throw new KeywardError('malformed', 'The order shares no identifier with the certificate it replaces');
  const taken = await deps.db
    .selectFrom('acme_orders')
    .select('id')
    .where('replaces', '=', value)
    .where('status', '!=', 'invalid')
    .executeTakeFirst();
  if (taken)
    throw new KeywardError(
      'alreadyReplaced',
      `Certificate ${value} has already been replaced by ${deps.urls.order(taken.id)}`,
    );
  return value;
}
