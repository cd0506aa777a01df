import { createHash } from 'node:crypto';

import type { Signer } from '../kms/signer.ts';
import { isValidRevocationReason } from './crl.ts';
import {
  children,
  decodeOid,
  DER_NULL,
  DerError,
  expectTag,
  octetString,
  oid,
  rawOf,
  readWhole,
  seq,
  TAG,
  type Tlv,
  tlv,
  valueOf,
} from './der.ts';
import {
  assertSignerMatches,
  bytesEqual,
  readIssuerCertificate,
  sha1,
  signAndWrap,
  signatureAlgorithmIdentifier,
} from './ocsp-signer-cert.ts';

/**
 * OCSP (RFC 6960) request parsing and response building, profiled after RFC 5019: responses are
 * meant to be pre-signed per certificate and served from cache, so a single-CertID response without
 * a nonce is the common case and a nonce only appears when answering a live request.
 */

const OCSP_OID = {
  basic: '1.3.6.1.5.5.7.48.1.1',
  nonce: '1.3.6.1.5.5.7.48.1.2',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
} as const;

/** Requests are a handful of hashes; anything much larger is not a request we want to parse. */
export const MAX_OCSP_REQUEST_BYTES = 16 * 1024;
/** RFC 5019 clients send one CertID; a few more are tolerated, a flood is refused. */
export const MAX_CERT_IDS_PER_REQUEST = 32;
/** RFC 8954 bounds (RFC 9654 later allows up to 128 octets; we keep the tighter one). */
export const MAX_NONCE_BYTES = 32;

export type CertIdHash = 'sha1' | 'sha256';

export interface CertId {
  hashAlgorithm: CertIdHash;
  issuerNameHash: Uint8Array;
  issuerKeyHash: Uint8Array;
  /** Big-endian magnitude, no sign octet. */
  serialNumber: Uint8Array;
  /** DER of the CertID as the client sent it, echoed back so the client's byte comparison succeeds. */
  raw: Uint8Array;
}

export interface ParsedOcspRequest {
  certIds: CertId[];
  nonce?: Uint8Array;
}

/** The request can't be answered; the HTTP layer replies with `ocspErrorResponse('malformedRequest')`. */
export class OcspRequestError extends Error {
  override readonly name = 'OcspRequestError';
}

const HASH_LENGTH: Record<CertIdHash, number> = { sha1: 20, sha256: 32 };

function fail(message: string): never {
  throw new OcspRequestError(message);
}

function hashAlgorithmOf(buf: Uint8Array, algT: Tlv): CertIdHash {
  const parts = children(buf, expectTag(algT, TAG.SEQUENCE, 'hashAlgorithm'));
  const dotted = decodeOid(valueOf(buf, expectTag(parts[0], TAG.OID, 'hash OID')));
  // Parameters are absent or NULL for both digests; clients differ, so both are accepted.
  const params = parts[1];
  if (parts.length > 2 || (params !== undefined && !(params.tag === TAG.NULL && params.end === params.valueStart))) {
    fail('unexpected hash algorithm parameters');
  }
  if (dotted === OCSP_OID.sha1) return 'sha1';
  if (dotted === OCSP_OID.sha256) return 'sha256';
  return fail(`unsupported CertID hash algorithm ${dotted}`);
}

function parseCertId(buf: Uint8Array, t: Tlv): CertId {
  const parts = children(buf, expectTag(t, TAG.SEQUENCE, 'CertID'));
  if (parts.length !== 4) fail('CertID must have four fields');
  const hashAlgorithm = hashAlgorithmOf(buf, parts[0]!);
  const issuerNameHash = valueOf(buf, expectTag(parts[1], TAG.OCTET_STRING, 'issuerNameHash'));
  const issuerKeyHash = valueOf(buf, expectTag(parts[2], TAG.OCTET_STRING, 'issuerKeyHash'));
  const len = HASH_LENGTH[hashAlgorithm];
  if (issuerNameHash.length !== len || issuerKeyHash.length !== len)
    fail(`${hashAlgorithm} CertID hashes must be ${len} octets`);
  const serialT = expectTag(parts[3], TAG.INTEGER, 'serialNumber');
  let serial = valueOf(buf, serialT);
  if (serial.length === 0) fail('empty serial number');
  // A negative serial can't name a certificate we issued, and has no magnitude form to return.
  if ((serial[0]! & 0x80) !== 0) fail('negative serial number');
  if (serial.length > 1 && serial[0] === 0) {
    if ((serial[1]! & 0x80) === 0) fail('non-minimal serial number');
    serial = serial.subarray(1);
  }
  if (serial.length > 20) fail('serial number longer than 20 octets');
  return {
    hashAlgorithm,
    issuerNameHash: issuerNameHash.slice(),
    issuerKeyHash: issuerKeyHash.slice(),
    serialNumber: serial.slice(),
    raw: rawOf(buf, t).slice(),
  };
}

interface ParsedExtension {
  id: string;
  critical: boolean;
  value: Uint8Array;
}

function parseExtensions(buf: Uint8Array, listT: Tlv | undefined): ParsedExtension[] {
  const out: ParsedExtension[] = [];
  const seen = new Set<string>();
  for (const extT of children(buf, expectTag(listT, TAG.SEQUENCE, 'Extensions'))) {
    const parts = children(buf, expectTag(extT, TAG.SEQUENCE, 'Extension'));
    const id = decodeOid(valueOf(buf, expectTag(parts[0], TAG.OID, 'extnID')));
    let critical = false;
    let i = 1;
    if (parts[i]?.tag === TAG.BOOLEAN) {
      const b = valueOf(buf, parts[i]!);
      if (b.length !== 1) fail('bad BOOLEAN');
      critical = b[0] !== 0;
      i++;
    }
    const value = valueOf(buf, expectTag(parts[i], TAG.OCTET_STRING, 'extnValue'));
    if (parts.length !== i + 1) fail('Extension has extra fields');
    if (seen.has(id)) fail(`extension ${id} appears twice`);
    seen.add(id);
    out.push({ id, critical, value });
  }
  return out;
}

/** Unknown extensions are ignored unless critical (RFC 6960 4.4, RFC 5280 4.2 semantics). */
function refuseUnknownCritical(exts: readonly ParsedExtension[], known: readonly string[]): void {
  for (const e of exts) if (e.critical && !known.includes(e.id)) fail(`unsupported critical extension ${e.id}`);
}

function nonceOf(ext: ParsedExtension): Uint8Array {
  // RFC 6960 4.4.1: extnValue holds a DER OCTET STRING whose content is the nonce.
  const inner = readWhole(ext.value, TAG.OCTET_STRING);
  const nonce = valueOf(ext.value, inner);
  if (nonce.length < 1 || nonce.length > MAX_NONCE_BYTES) fail(`nonce must be 1..${MAX_NONCE_BYTES} octets`);
  return nonce.slice();
}

/**
 * Parses an OCSPRequest (RFC 6960 4.1.1). requestorName and any request signature are ignored:
 * responses are public information, so who asks does not change the answer.
 */
export function parseOcspRequest(der: Uint8Array): ParsedOcspRequest {
  if (der.length > MAX_OCSP_REQUEST_BYTES) fail(`request larger than ${MAX_OCSP_REQUEST_BYTES} bytes`);
  try {
    const root = readWhole(der, TAG.SEQUENCE);
    const top = children(der, root);
    if (top.length < 1 || top.length > 2) fail('OCSPRequest must have one or two fields');
    if (top[1] !== undefined && top[1].tag !== 0xa0) fail('unexpected field after tbsRequest');
    const tbs = children(der, expectTag(top[0], TAG.SEQUENCE, 'tbsRequest'));
    let i = 0;
    if (tbs[i]?.tag === 0xa0) {
      const v = children(der, tbs[i]!);
      const ver = valueOf(der, expectTag(v[0], TAG.INTEGER, 'version'));
      if (v.length !== 1 || ver.length !== 1 || ver[0] !== 0) fail('unsupported OCSP request version');
      i++;
    }
    if (tbs[i]?.tag === 0xa1) i++; // requestorName
    const listT = expectTag(tbs[i++], TAG.SEQUENCE, 'requestList');
    let extensions: ParsedExtension[] = [];
    if (tbs[i]?.tag === 0xa2) {
      const wrapped = children(der, tbs[i]!);
      if (wrapped.length !== 1) fail('bad requestExtensions');
      extensions = parseExtensions(der, wrapped[0]);
      i++;
    }
    if (i !== tbs.length) fail('unexpected fields in tbsRequest');

    const requests = children(der, listT);
    if (requests.length === 0) fail('request names no certificates');
    if (requests.length > MAX_CERT_IDS_PER_REQUEST)
      fail(`more than ${MAX_CERT_IDS_PER_REQUEST} CertIDs in one request`);
    const certIds = requests.map((reqT) => {
      const parts = children(der, expectTag(reqT, TAG.SEQUENCE, 'Request'));
      if (parts.length > 2) fail('Request has extra fields');
      if (parts[1] !== undefined) {
        if (parts[1].tag !== 0xa0) fail('bad singleRequestExtensions');
        const wrapped = children(der, parts[1]);
        if (wrapped.length !== 1) fail('bad singleRequestExtensions');
        refuseUnknownCritical(parseExtensions(der, wrapped[0]), []);
      }
      return parseCertId(der, parts[0]!);
    });

    refuseUnknownCritical(extensions, [OCSP_OID.nonce]);
    const nonceExt = extensions.find((e) => e.id === OCSP_OID.nonce);
    return nonceExt === undefined ? { certIds } : { certIds, nonce: nonceOf(nonceExt) };
  } catch (e) {
    if (e instanceof DerError) throw new OcspRequestError(`malformed OCSP request: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Issuer matching

export interface IssuerHashPair {
  nameHash: Uint8Array;
  keyHash: Uint8Array;
}

export type IssuerHashes = Record<CertIdHash, IssuerHashPair>;

/**
 * The CertID hashes a client computes for certificates under this issuer: name hash over the
 * issuer's subject DER, key hash over the subjectPublicKey bits (RFC 6960 4.1.1). Compute once per
 * issuer and compare against each request.
 */
export function issuerHashes(issuerCertDer: Uint8Array): IssuerHashes {
  const info = readIssuerCertificate(issuerCertDer);
  const h = (alg: string, data: Uint8Array): Uint8Array => new Uint8Array(createHash(alg).update(data).digest());
  return {
    sha1: { nameHash: h('sha1', info.subject), keyHash: h('sha1', info.publicKeyBits) },
    sha256: { nameHash: h('sha256', info.subject), keyHash: h('sha256', info.publicKeyBits) },
  };
}

/** Whether `certId` names a certificate issued under the issuer `hashes` were computed for. */
export function certIdMatchesIssuer(certId: CertId, hashes: IssuerHashes): boolean {
  const pair = hashes[certId.hashAlgorithm];
  // Hashes of public data: a plain comparison leaks nothing.
  return bytesEqual(certId.issuerNameHash, pair.nameHash) && bytesEqual(certId.issuerKeyHash, pair.keyHash);
}

/**
 * A CertID built by the CA itself, for pre-signing a response per certificate before anyone asks.
 * A client asking with the other hash algorithm needs its own response; build one per algorithm.
 */
export function makeCertId(hashes: IssuerHashes, hashAlgorithm: CertIdHash, serialNumber: Uint8Array): CertId {
  const pair = hashes[hashAlgorithm];
  const algOid = hashAlgorithm === 'sha1' ? OCSP_OID.sha1 : OCSP_OID.sha256;
  let i = 0;
  while (i < serialNumber.length - 1 && serialNumber[i] === 0) i++;
  const magnitude = serialNumber.slice(i);
  const intContent = magnitude.length > 0 && (magnitude[0]! & 0x80) !== 0 ? Uint8Array.of(0, ...magnitude) : magnitude;
  if (intContent.length === 0 || intContent.length > 21) throw new RangeError('serial must be 1..20 octets');
  // SHA-1 and SHA-256 AlgorithmIdentifiers with NULL parameters, the form OpenSSL sends and expects.
  const raw = seq(
    seq(oid(algOid), DER_NULL),
    octetString(pair.nameHash),
    octetString(pair.keyHash),
    tlv(TAG.INTEGER, intContent),
  );
  return { hashAlgorithm, issuerNameHash: pair.nameHash, issuerKeyHash: pair.keyHash, serialNumber: magnitude, raw };
}

// ---------------------------------------------------------------------------------------------
// Responses

export type OcspCertStatus =
  { kind: 'good' } | { kind: 'revoked'; revokedAt: Date; reason?: number } | { kind: 'unknown' };

export interface OcspSingleResponse {
  certId: CertId;
  status: OcspCertStatus;
  thisUpdate: Date;
  nextUpdate: Date;
}

export interface OcspResponseOptions {
  responder: {
    /** DER of the certificate whose key `signer` holds; included in `certs`. */
    certificate: Uint8Array;
    signer: Signer;
    /** ResponderID byKey (RFC 5019 2.2.3's preference) unless false, which names the responder instead. */
    byKeyHash?: boolean;
  };
  producedAt: Date;
  responses: OcspSingleResponse[];
  nonce?: Uint8Array;
}

/** GeneralizedTime without fractional seconds, as RFC 5019 2.2.4 requires of every OCSP time. */
export function generalizedTime(date: Date): Uint8Array {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new RangeError('invalid date');
  const y = date.getUTCFullYear();
  if (y < 1 || y > 9999) throw new RangeError(`year ${y} out of range`);
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  const text =
    p(y, 4) +
    p(date.getUTCMonth() + 1) +
    p(date.getUTCDate()) +
    p(date.getUTCHours()) +
    p(date.getUTCMinutes()) +
    p(date.getUTCSeconds()) +
    'Z';
  return tlv(TAG.GENERALIZED_TIME, new TextEncoder().encode(text));
}

function certStatus(status: OcspCertStatus): Uint8Array {
  switch (status.kind) {
    case 'good':
      return Uint8Array.of(0x80, 0);
    case 'unknown':
      return Uint8Array.of(0x82, 0);
    case 'revoked': {
      const { reason } = status;
      if (reason !== undefined && !isValidRevocationReason(reason))
        throw new RangeError(`invalid revocation reason ${reason}`);
      // Same rule as the CRL: unspecified (0) is said by leaving the reason out.
      const reasonField = reason === undefined || reason === 0 ? [] : [tlv(0xa0, Uint8Array.of(0x0a, 1, reason))];
      return tlv(0xa1, generalizedTime(status.revokedAt), ...reasonField);
    }
  }
}

function singleResponse(r: OcspSingleResponse): Uint8Array {
  if (!(r.thisUpdate.getTime() <= r.nextUpdate.getTime()))
    throw new RangeError('thisUpdate must not be after nextUpdate');
  return seq(
    r.certId.raw,
    certStatus(r.status),
    generalizedTime(r.thisUpdate),
    tlv(0xa0, generalizedTime(r.nextUpdate)),
  );
}

/**
 * A successful OCSPResponse carrying a signed BasicOCSPResponse. Each CertID is echoed as the raw DER
 * the client sent (or `makeCertId` produced), so a SHA-256 CertID comes back as SHA-256.
 */
export async function buildOcspResponse(opts: OcspResponseOptions): Promise<Uint8Array> {
  const { responder } = opts;
  if (opts.responses.length === 0) throw new RangeError('an OCSP response needs at least one SingleResponse');
  if (opts.nonce !== undefined && (opts.nonce.length < 1 || opts.nonce.length > MAX_NONCE_BYTES)) {
    throw new RangeError(`nonce must be 1..${MAX_NONCE_BYTES} octets`);
  }
  const info = readIssuerCertificate(responder.certificate);
  assertSignerMatches(responder.signer, info.spki, 'responder');

  // ResponderID is a CHOICE under EXPLICIT tagging: byName [1] Name, byKey [2] KeyHash.
  const responderId =
    responder.byKeyHash === false ? tlv(0xa1, info.subject) : tlv(0xa2, octetString(sha1(info.publicKeyBits)));
  const responseExtensions =
    opts.nonce === undefined ? [] : [tlv(0xa1, seq(seq(oid(OCSP_OID.nonce), octetString(octetString(opts.nonce)))))];
  const tbsResponseData = seq(
    responderId,
    generalizedTime(opts.producedAt),
    seq(...opts.responses.map(singleResponse)),
    ...responseExtensions,
  );
  const sigAlg = signatureAlgorithmIdentifier(responder.signer.algorithm);
  const firstSerial = Buffer.from(opts.responses[0]!.certId.serialNumber).toString('hex');
  const signed = await signAndWrap(responder.signer, tbsResponseData, sigAlg, {
    purpose: 'ocsp-response',
    serial: firstSerial,
    responses: String(opts.responses.length),
  });
  // Append certs [0] EXPLICIT SEQUENCE OF Certificate to the signed SEQUENCE's content.
  const outer = readWhole(signed, TAG.SEQUENCE);
  const basic = seq(valueOf(signed, outer), tlv(0xa0, seq(responder.certificate)));
  return seq(Uint8Array.of(0x0a, 1, 0), tlv(0xa0, seq(oid(OCSP_OID.basic), octetString(basic))));
}

export type OcspErrorStatus = 'malformedRequest' | 'internalError' | 'tryLater' | 'sigRequired' | 'unauthorized';

const ERROR_STATUS: Record<OcspErrorStatus, number> = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
};

/** An unsigned OCSPResponse with only a status (RFC 6960 4.2.1); small, constant, cacheable. */
export function ocspErrorResponse(status: OcspErrorStatus): Uint8Array {
  return Uint8Array.of(TAG.SEQUENCE, 3, 0x0a, 1, ERROR_STATUS[status]);
}
