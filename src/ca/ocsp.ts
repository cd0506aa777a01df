import { createHash } from 'node:crypto';

import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

import { bytesEqual } from '../core/bytes.ts';
import type { Signer } from '../kms/signer.ts';
import { isValidRevocationReason } from './crl.ts';
import { DER_NULL, octetString, oid, readWhole, seq, TAG, tlv, valueOf } from './der.ts';
import { assertSignerMatches, parseIssuerCertificate } from './issuer-certificate.ts';
import { keyIdentifierOf } from './key-identifier.ts';
import { signAndWrap, signatureAlgorithmIdentifier } from './signature.ts';

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

function hashAlgorithmOf(alg: pkijs.AlgorithmIdentifier): CertIdHash {
  // Parameters are absent or NULL for both digests; clients differ, so both are accepted.
  const params = alg.algorithmParams as asn1js.BaseBlock | undefined;
  if (params !== undefined && !(params instanceof asn1js.Null)) fail('unexpected hash algorithm parameters');
  if (alg.algorithmId === OCSP_OID.sha1) return 'sha1';
  if (alg.algorithmId === OCSP_OID.sha256) return 'sha256';
  return fail(`unsupported CertID hash algorithm ${alg.algorithmId}`);
}

function readCertId(certId: pkijs.CertID, raw: ArrayBuffer): CertId {
  const hashAlgorithm = hashAlgorithmOf(certId.hashAlgorithm);
  const issuerNameHash = new Uint8Array(certId.issuerNameHash.valueBlock.valueHexView);
  const issuerKeyHash = new Uint8Array(certId.issuerKeyHash.valueBlock.valueHexView);
  const len = HASH_LENGTH[hashAlgorithm];
  if (issuerNameHash.length !== len || issuerKeyHash.length !== len)
    fail(`${hashAlgorithm} CertID hashes must be ${len} octets`);
  let serial = new Uint8Array(certId.serialNumber.valueBlock.valueHexView);
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
    raw: new Uint8Array(raw).slice(),
  };
}

/** Unknown extensions are ignored unless critical (RFC 6960 4.4, RFC 5280 4.2 semantics). */
function checkExtensions(exts: readonly pkijs.Extension[] | undefined, known: readonly string[]): void {
  const seen = new Set<string>();
  for (const e of exts ?? []) {
    if (seen.has(e.extnID)) fail(`extension ${e.extnID} appears twice`);
    seen.add(e.extnID);
    if (e.critical && !known.includes(e.extnID)) fail(`unsupported critical extension ${e.extnID}`);
  }
}

function nonceOf(ext: pkijs.Extension): Uint8Array {
  // RFC 6960 4.4.1: extnValue holds a DER OCTET STRING whose content is the nonce.
  const inner = asn1js.fromBER(ext.extnValue.valueBlock.valueHexView);
  if (inner.offset === -1 || inner.offset !== ext.extnValue.valueBlock.valueHexView.byteLength)
    fail('the nonce is not one DER value');
  if (!(inner.result instanceof asn1js.OctetString) || inner.result.valueBlock.isConstructed)
    fail('the nonce is not an OCTET STRING');
  const nonce = new Uint8Array(inner.result.valueBlock.valueHexView);
  if (nonce.length < 1 || nonce.length > MAX_NONCE_BYTES) fail(`nonce must be 1..${MAX_NONCE_BYTES} octets`);
  return nonce.slice();
}

/** The CertIDs exactly as the client encoded them (requestList is the SEQUENCE after the tagged fields). */
function rawCertIds(request: asn1js.Sequence): ArrayBuffer[] {
  const tbs = request.valueBlock.value[0] as asn1js.Sequence;
  const list = tbs.valueBlock.value.find((b) => b.idBlock.tagClass === 1 && b.idBlock.tagNumber === 16);
  if (!(list instanceof asn1js.Sequence)) return fail('no requestList');
  return list.valueBlock.value.map((r) => {
    const certId = (r as asn1js.Sequence).valueBlock.value[0];
    if (!certId) return fail('a Request has no CertID');
    return certId.valueBeforeDecodeView.slice().buffer;
  });
}

/**
 * Parses an OCSPRequest (RFC 6960 4.1.1) with pkijs (schema-checked). requestorName and any
 * request signature are ignored: responses are public information, so who asks does not change the
 * answer.
 */
export function parseOcspRequest(der: Uint8Array): ParsedOcspRequest {
  if (der.length > MAX_OCSP_REQUEST_BYTES) fail(`request larger than ${MAX_OCSP_REQUEST_BYTES} bytes`);
  const asn = asn1js.fromBER(der);
  if (asn.offset === -1) fail(`malformed OCSP request: ${asn.result.error || 'not BER'}`);
  if (asn.offset !== der.byteLength) fail('malformed OCSP request: trailing bytes');
  if (!(asn.result instanceof asn1js.Sequence)) fail('malformed OCSP request: not a SEQUENCE');
  let request: pkijs.OCSPRequest;
  try {
    request = new pkijs.OCSPRequest({ schema: asn.result });
  } catch (err) {
    return fail(`malformed OCSP request: ${err instanceof Error ? err.message : String(err)}`);
  }
  const tbs = request.tbsRequest;
  if (tbs.version !== undefined && tbs.version !== 0) fail('unsupported OCSP request version');
  const requests = tbs.requestList;
  if (requests.length === 0) fail('request names no certificates');
  if (requests.length > MAX_CERT_IDS_PER_REQUEST) fail(`more than ${MAX_CERT_IDS_PER_REQUEST} CertIDs in one request`);
  const raws = rawCertIds(asn.result);
  const certIds = requests.map((r, i) => {
    checkExtensions(r.singleRequestExtensions, []);
    return readCertId(r.reqCert, raws[i]!);
  });
  checkExtensions(tbs.requestExtensions, [OCSP_OID.nonce]);
  const nonceExt = tbs.requestExtensions?.find((e) => e.extnID === OCSP_OID.nonce);
  return nonceExt === undefined ? { certIds } : { certIds, nonce: nonceOf(nonceExt) };
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
  const info = parseIssuerCertificate(issuerCertDer);
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
  const info = parseIssuerCertificate(responder.certificate);
  assertSignerMatches(responder.signer, info.subjectPublicKeyInfo, 'responder');

  // ResponderID is a CHOICE under EXPLICIT tagging: byName [1] Name, byKey [2] KeyHash.
  const responderId =
    responder.byKeyHash === false
      ? tlv(0xa1, info.subject)
      : tlv(0xa2, octetString(keyIdentifierOf(info.publicKeyBits)));
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
