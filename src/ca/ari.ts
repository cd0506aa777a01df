import { sql } from 'kysely';

import { bytesEqual } from '../core/bytes.ts';
import { KeywardError } from '../core/errors.ts';
import { serialFromBytes } from '../core/serial.ts';
import type { Db } from '../db/schema.ts';
import { parseIssuerCertificate } from './issuer-certificate.ts';

/**
 * ACME Renewal Information (RFC 9773). The certID names a certificate by its issuer's key
 * identifier and its serial: base64url(AKI keyIdentifier) "." base64url(serial INTEGER content
 * octets), both without padding (section 4.1). The suggested window is the last third of the
 * certificate's lifetime; a revoked certificate gets a window that has already begun and lasts an
 * hour more, so a client renews at once.
 */

/** A certID that is not one (RFC 9773 §4.1): malformed. */
const invalid = (detail: string) => new KeywardError('malformed', `invalid certID: ${detail}`);

export interface RenewalInfo {
  suggestedWindow: { start: string; end: string };
  explanationURL?: string;
}

export interface AriCertId {
  keyIdentifier: Uint8Array;
  /** Lower-case hex without leading zeros, the form `certificates.serial` uses. */
  serial: string;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function decodePart(part: string, what: string): Uint8Array {
  // Unpadded base64url only (RFC 9773 4.1 / RFC 8555 section 6.1); a length of 1 mod 4 is no encoding at all.
  if (!B64URL.test(part) || part.length % 4 === 1) throw invalid(`${what} is not unpadded base64url`);
  const bytes = new Uint8Array(Buffer.from(part, 'base64url'));
  // Non-canonical trailing bits would let two strings name one certificate; refuse them.
  if (Buffer.from(bytes).toString('base64url') !== part) throw invalid(`${what} is not canonical base64url`);
  return bytes;
}

export function parseAriCertId(text: string): AriCertId {
  const parts = text.split('.');
  if (parts.length !== 2) throw invalid('certID must be two base64url parts joined by "."');
  const keyIdentifier = decodePart(parts[0]!, 'the key identifier');
  const serialDer = decodePart(parts[1]!, 'the serial number');
  if (keyIdentifier.length === 0 || keyIdentifier.length > 64) throw invalid('bad key identifier length');
  if (serialDer.length === 0 || serialDer.length > 21) throw invalid('bad serial number length');
  if ((serialDer[0]! & 0x80) !== 0) throw invalid('the serial number is negative');
  if (serialDer.length > 1 && serialDer[0] === 0 && (serialDer[1]! & 0x80) === 0) {
    throw invalid('the serial number is not minimally encoded (DER INTEGER content octets)');
  }
  const serial = serialFromBytes(serialDer);
  if (serial === '0') throw invalid('the serial number must be positive');
  return { keyIdentifier, serial };
}

/** The certID a client computes for one of our certificates (used by tests and the CLI). */
export function ariCertId(issuerCertificate: Uint8Array, serialHex: string): string {
  const aki = parseIssuerCertificate(issuerCertificate).keyIdentifier;
  let hex = serialHex.length % 2 ? `0${serialHex}` : serialHex;
  if (Number.parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return `${Buffer.from(aki).toString('base64url')}.${Buffer.from(hex, 'hex').toString('base64url')}`;
}

/** The renewal window for a certificate, or undefined when no certificate of ours matches. */
export async function renewalInfo(db: Db, certId: AriCertId): Promise<RenewalInfo | undefined> {
  const issuers = await db
    .selectFrom('issuers')
    .select(['id', 'certificate'])
    .where('kind', '=', 'intermediate')
    .execute();
  const issuer = issuers.find((i) =>
    bytesEqual(parseIssuerCertificate(i.certificate).keyIdentifier, certId.keyIdentifier),
  );
  if (!issuer) return undefined;
  const r = await sql<{ not_before: Date; not_after: Date; status: string; revoked_at: Date | null; now: Date }>`
    SELECT not_before, not_after, status, revoked_at, date_trunc('second', now()) AS now
    FROM certificates WHERE serial = ${certId.serial} AND issuer_id = ${issuer.id}`.execute(db);
  const row = r.rows[0];
  if (!row) return undefined;
  return { suggestedWindow: suggestedWindow(row) };
}

/** How far a revoked certificate's window reaches on either side of now. */
const REVOKED_WINDOW_MS = 3_600_000;

export function suggestedWindow(cert: {
  not_before: Date;
  not_after: Date;
  status: string;
  revoked_at: Date | null;
  now: Date;
}): { start: string; end: string } {
  const now = new Date(cert.now);
  if (cert.status === 'revoked') {
    // RFC 9773 §4.2: a window that has begun and lasts long enough to act in. From the
    // revocation (at least an hour back) to an hour ahead: a client picking a random time in it
    // renews at once more often than not, and within the hour otherwise; one that only checks
    // whether now is inside the window (a timer-driven certbot) finds it inside. A window whose
    // start equals its end gives a client nothing to pick from.
    const revokedAt = cert.revoked_at && cert.revoked_at <= now ? cert.revoked_at.getTime() : now.getTime();
    const start = Math.min(revokedAt, now.getTime() - REVOKED_WINDOW_MS);
    return { start: new Date(start).toISOString(), end: new Date(now.getTime() + REVOKED_WINDOW_MS).toISOString() };
  }
  const nb = new Date(cert.not_before).getTime();
  const na = new Date(cert.not_after).getTime();
  const start = nb + Math.floor(((na - nb) * 2) / 3);
  return { start: new Date(start).toISOString(), end: new Date(na).toISOString() };
}
