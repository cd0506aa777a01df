import { KeywardError } from '../core/errors.ts';
import { serialFromBytes } from '../core/serial.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { decodeB64url } from './ids.ts';

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
  const parts = value.split('.');
  const aki = parts.length === 2 ? decodeB64url(parts[0]!) : null;
  const serialBytes = parts.length === 2 ? decodeB64url(parts[1]!) : null;
  if (!aki || !serialBytes || aki.length === 0 || serialBytes.length === 0)
    throw new KeywardError('malformed', '"replaces" is not an ARI certificate identifier');
  const serial = serialFromBytes(serialBytes);
  const cert = await deps.db
    .selectFrom('certificates')
    .select(['serial', 'requester', 'sans'])
    .where('serial', '=', serial)
    .executeTakeFirst();
  if (!cert) throw new KeywardError('malformed', '"replaces" names a certificate this CA did not issue');
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
