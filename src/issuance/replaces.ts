import { type AriCertId, parseAriCertId } from '../ca/ari.ts';
import { parseIssuerCertificate } from '../ca/issuer-certificate.ts';
import { bytesEqual } from '../core/bytes.ts';
import { KeywardError } from '../core/errors.ts';
import { type Identifier, identifierKey, identifiersOf, type SanSet } from '../core/identifiers.ts';
import { type Requester, requesterLabel } from './request.ts';

/** A `replaces` value (RFC 9773 §5) as the request carries it. */
export interface Replaces {
  /** As sent: canonical (parseAriCertId), so one certificate has exactly one such string. */
  text: string;
  certId: AriCertId;
}

/** The certificate a `replaces` value names by serial, as the front end read it. */
export interface ReplacedCertificate {
  /** `certificates.requester`: who it was issued to. */
  requester: string;
  sans: SanSet;
  issuerId: string;
  issuerCertificate: Uint8Array;
  /** Where a live request that already replaces it can be seen, if there is one. */
  replacedBy?: string;
}

export function parseReplaces(value: unknown): Replaces {
  if (typeof value !== 'string') throw new KeywardError('malformed', '"replaces" must be a string');
  try {
    return { text: value, certId: parseAriCertId(value) };
  } catch (err) {
    throw new KeywardError('malformed', `"replaces" is not an ARI certificate identifier (${(err as Error).message})`);
  }
}

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
 * RFC 9773 §5: `replaces` names a certificate of ours by both halves of its ID (the serial and
 * its issuer's key identifier, §4.1), issued to this requester, sharing a name with the new
 * request, and not replaced by another live request already.
 */
export function checkReplaces(
  requester: Requester,
  names: readonly Identifier[],
  replaces: Replaces,
  found: ReplacedCertificate | undefined,
): void {
  if (
    !found ||
    !bytesEqual(issuerKeyIdentifier(found.issuerId, found.issuerCertificate), replaces.certId.keyIdentifier)
  )
    throw new KeywardError('malformed', '"replaces" names a certificate this CA did not issue');
  if (found.requester !== requesterLabel(requester))
    throw new KeywardError('unauthorized', '"replaces" names a certificate of another account');
  const theirs = new Set(identifiersOf(found.sans).map(identifierKey));
  if (!names.some((n) => theirs.has(identifierKey(n))))
    throw new KeywardError('malformed', 'The order shares no identifier with the certificate it replaces');
  if (found.replacedBy)
    throw new KeywardError(
      'alreadyReplaced',
      `Certificate ${replaces.text} has already been replaced by ${found.replacedBy}`,
    );
}
