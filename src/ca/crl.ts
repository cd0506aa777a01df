import type { Signer } from '../kms/signer.ts';
import { authorityKeyIdentifierExtension, extension } from './cert-extensions.ts';
import { encodeTime, oid, seq, smallInteger, TAG, tlv, unsignedIntegerContent } from './der.ts';
import { encodeUri } from './general-names.ts';
import { assertSignerMatches, parseIssuerCertificate } from './issuer-certificate.ts';
import { signAndWrap, signatureAlgorithmIdentifier } from './signature.ts';

/**
 * CRL v2 (RFC 5280 section 5). The revokedCertificates list is written straight into one growing
 * buffer rather than through per-entry ASN.1 objects, because a CA with short-lived certificates can
 * still carry a million entries and each object would cost far more than the ~50 bytes it encodes.
 */

/** CRLReason (RFC 5280 5.3.1); 7 is unassigned. */
export { REVOCATION_REASONS, type RevocationReason } from './revocation-reasons.ts';

const CRL_OID = {
  crlNumber: '2.5.29.20',
  reasonCode: '2.5.29.21',
  issuingDistributionPoint: '2.5.29.28',
} as const;

export interface CrlEntry {
  /** Big-endian magnitude, 1..20 octets. */
  serialNumber: Uint8Array;
  revokedAt: Date;
  /** A CRLReason value; 0 (unspecified) and undefined both leave the reasonCode extension out. */
  reason?: number;
}

export interface CrlOptions {
  issuer: { certificate: Uint8Array; signer: Signer };
  /** Monotonic per issuer (RFC 5280 5.2.3); at most 20 octets. */
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: Iterable<CrlEntry>;
  issuingDistributionPoint?: { url: string; onlyContainsUserCerts?: boolean };
}

export class CrlError extends Error {
  override readonly name = 'CrlError';
}

/** Append-only byte buffer that doubles as it fills; one copy per doubling, none per entry. */
class ByteSink {
  private buf: Uint8Array;
  length = 0;

  constructor(initial: number) {
    this.buf = new Uint8Array(Math.max(initial, 64));
  }

  reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  /** Caller must have reserved room. */
  push(b: number): void {
    this.buf[this.length++] = b;
  }

  write(bytes: Uint8Array): void {
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

const REASON_EXT_PREFIX = (() => {
  // crlEntryExtensions ::= SEQUENCE { Extension { reasonCode, OCTET STRING { ENUMERATED r } } }
  // Everything but the final reason octet is constant, so it is encoded once.
  const ext = seq(seq(oid(CRL_OID.reasonCode), tlv(TAG.OCTET_STRING, Uint8Array.of(0x0a, 1, 0))));
  return ext.subarray(0, ext.length - 1);
})();

function lengthSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 5;
}

function pushLength(sink: ByteSink, n: number): void {
  if (n < 0x80) {
    sink.push(n);
    return;
  }
  const bytes = lengthSize(n) - 1;
  sink.push(0x80 | bytes);
  for (let i = bytes - 1; i >= 0; i--) sink.push((n >>> (8 * i)) & 0xff);
}

function pushDigits2(sink: ByteSink, n: number): void {
  sink.push(0x30 + Math.floor(n / 10));
  sink.push(0x30 + (n % 10));
}

/** Same encoding as `encodeTime` (UTCTime until 2049), written in place to skip a string per entry. */
function pushTime(sink: ByteSink, d: Date): void {
  const y = d.getUTCFullYear();
  if (!Number.isFinite(d.getTime()) || y < 1950 || y > 9999) throw new CrlError('revocation date out of range');
  if (y < 2050) {
    sink.push(TAG.UTC_TIME);
    sink.push(13);
    pushDigits2(sink, y % 100);
  } else {
    sink.push(TAG.GENERALIZED_TIME);
    sink.push(15);
    pushDigits2(sink, Math.floor(y / 100));
    pushDigits2(sink, y % 100);
  }
  pushDigits2(sink, d.getUTCMonth() + 1);
  pushDigits2(sink, d.getUTCDate());
  pushDigits2(sink, d.getUTCHours());
  pushDigits2(sink, d.getUTCMinutes());
  pushDigits2(sink, d.getUTCSeconds());
  sink.push(0x5a); // 'Z'
}

/**
 * Whether a reason may be stated for a revocation: removeFromCRL (8) only means something in a delta
 * CRL, which Keyward does not produce, and OCSP has no use for it either.
 */
export function isValidRevocationReason(reason: number): boolean {
  return Number.isInteger(reason) && reason >= 0 && reason <= 10 && reason !== 7 && reason !== 8;
}

/** Appends one revokedCertificates element; returns nothing so no per-entry array survives. */
function pushEntry(sink: ByteSink, e: CrlEntry): void {
  const serial = unsignedIntegerContent(e.serialNumber);
  if (serial.length > 20 || (serial.length === 1 && serial[0] === 0)) {
    throw new CrlError('serial numbers must be positive and at most 20 octets');
  }
  const reason = e.reason ?? 0;
  if (!isValidRevocationReason(reason)) throw new CrlError(`invalid revocation reason ${reason}`);
  const timeLen = e.revokedAt.getUTCFullYear() < 2050 ? 15 : 17;
  const extLen = reason === 0 ? 0 : REASON_EXT_PREFIX.length + 1;
  const bodyLen = 2 + serial.length + timeLen + extLen;
  sink.reserve(1 + lengthSize(bodyLen) + bodyLen);
  sink.push(TAG.SEQUENCE);
  pushLength(sink, bodyLen);
  sink.push(TAG.INTEGER);
  sink.push(serial.length);
  sink.write(serial);
  pushTime(sink, e.revokedAt);
  if (extLen > 0) {
    sink.write(REASON_EXT_PREFIX);
    sink.push(reason);
  }
}

function bigintInteger(n: bigint): Uint8Array {
  if (n < 0n) throw new CrlError('crlNumber must not be negative');
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  const content = unsignedIntegerContent(new Uint8Array(Buffer.from(hex, 'hex')));
  if (content.length > 20) throw new CrlError('crlNumber must fit in 20 octets');
  return tlv(TAG.INTEGER, content);
}

function issuingDistributionPointValue(idp: NonNullable<CrlOptions['issuingDistributionPoint']>): Uint8Array {
  // distributionPoint [0] (a CHOICE, hence explicit) holding fullName [0] IMPLICIT GeneralNames.
  const dp = tlv(0xa0, tlv(0xa0, encodeUri(idp.url)));
  // DEFAULT FALSE booleans must be absent when false (DER).
  const userOnly = idp.onlyContainsUserCerts === true ? [tlv(0x81, Uint8Array.of(0xff))] : [];
  return seq(dp, ...userOnly);
}

/**
 * A signed CRL v2 with authorityKeyIdentifier, cRLNumber and, when given, a critical
 * issuingDistributionPoint. Entries are consumed once, in the order given; the caller supplies each
 * serial once (no de-duplication here, so the CRL matches the database exactly).
 */
export async function buildCrl(opts: CrlOptions): Promise<Uint8Array> {
  const issuer = parseIssuerCertificate(opts.issuer.certificate);
  assertSignerMatches(opts.issuer.signer, issuer.subjectPublicKeyInfo, 'issuer');
  if (!(opts.thisUpdate.getTime() < opts.nextUpdate.getTime()))
    throw new CrlError('thisUpdate must be before nextUpdate');

  const sink = new ByteSink(4096);
  let count = 0;
  for (const entry of opts.entries) {
    pushEntry(sink, entry);
    count++;
  }

  const extensions = [
    authorityKeyIdentifierExtension(issuer.keyIdentifier),
    extension(CRL_OID.crlNumber, false, bigintInteger(opts.crlNumber)),
  ];
  if (opts.issuingDistributionPoint !== undefined) {
    // Critical (RFC 5280 5.2.5): a relying party that can't honour the scope must not use the CRL.
    extensions.push(
      extension(CRL_OID.issuingDistributionPoint, true, issuingDistributionPointValue(opts.issuingDistributionPoint)),
    );
  }

  const sigAlg = signatureAlgorithmIdentifier(opts.issuer.signer.algorithm);
  const head = [smallInteger(1), sigAlg, issuer.subject, encodeTime(opts.thisUpdate), encodeTime(opts.nextUpdate)];
  const tail = tlv(0xa0, seq(...extensions));
  // RFC 5280 5.1.2.6: with no revoked certificates the list is absent, not empty.
  const revoked = count === 0 ? null : sink.view();

  let bodyLen = tail.length;
  for (const h of head) bodyLen += h.length;
  if (revoked !== null) bodyLen += 1 + lengthSize(revoked.length) + revoked.length;
  const tbs = new ByteSink(1 + lengthSize(bodyLen) + bodyLen);
  tbs.push(TAG.SEQUENCE);
  pushLength(tbs, bodyLen);
  for (const h of head) tbs.write(h);
  if (revoked !== null) {
    tbs.push(TAG.SEQUENCE);
    pushLength(tbs, revoked.length);
    tbs.write(revoked);
  }
  tbs.write(tail);

  return signAndWrap(opts.issuer.signer, tbs.view(), sigAlg, {
    purpose: 'crl',
    crlNumber: opts.crlNumber.toString(),
    entries: String(count),
  });
}
