import { createHash } from 'node:crypto';

import type { SignContext, Signer } from '../kms/signer.ts';
import { signatureAlgorithmIdentifier } from './cert-builder.ts';
import {
  bitString,
  children,
  decodeOid,
  DER_NULL,
  DER_TRUE,
  DerError,
  encodeTime,
  expectTag,
  octetString,
  oid,
  rawOf,
  readWhole,
  seq,
  smallInteger,
  TAG,
  tlv,
  unsignedIntegerContent,
  valueOf,
} from './der.ts';
import { OID } from './oids.ts';
import { inspectSpki } from './spki.ts';

/**
 * The delegated OCSP responder certificate (RFC 6960 4.2.2.2), plus the pieces of "sign a
 * to-be-signed structure with a Signer" and "read what we need from an issuer certificate" that the
 * CRL and OCSP builders share with it.
 */

const ID_PKIX_OCSP_NOCHECK = '1.3.6.1.5.5.7.48.1.5';

// ---------------------------------------------------------------------------------------------
// Shared by CRL / OCSP / certificate builders

// One AlgorithmIdentifier encoder for certificates, CRLs and OCSP responses.
export { signatureAlgorithmIdentifier };

/**
 * SIGNED{ToBeSigned} ::= SEQUENCE { tbs, algorithm, BIT STRING }. The algorithm identifier inside
 * the TBS must equal `sigAlg`, so callers build it from the same signer first.
 */
export async function signAndWrap(
  signer: Signer,
  tbs: Uint8Array,
  sigAlg: Uint8Array,
  context?: SignContext,
): Promise<Uint8Array> {
  const signature = await signer.sign(tbs, context);
  return seq(tbs, sigAlg, bitString(signature));
}

export interface IssuerCertificateInfo {
  /** DER of the certificate's subject Name, byte for byte (what children put in `issuer`). */
  readonly subject: Uint8Array;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array;
  /** subjectPublicKey BIT STRING content without the unused-bits octet. */
  readonly publicKeyBits: Uint8Array;
  /**
   * What an authorityKeyIdentifier pointing at this certificate must hold: its own SKI when it has
   * one (chain builders match on it), else the RFC 5280 4.2.1.2 method-1 SHA-1 of the key bits.
   */
  readonly keyIdentifier: Uint8Array;
}

export class CertificateParseError extends Error {
  override readonly name = 'CertificateParseError';
}

/** Reads the few fields issuer-side builders need from a DER certificate. */
export function readIssuerCertificate(der: Uint8Array): IssuerCertificateInfo {
  try {
    const cert = readWhole(der, TAG.SEQUENCE);
    const [tbsT] = children(der, cert);
    const tbs = children(der, expectTag(tbsT, TAG.SEQUENCE, 'TBSCertificate'));
    let i = 0;
    if (tbs[0]?.tag === 0xa0) i++; // [0] version
    const subjectT = expectTag(tbs[i + 4], TAG.SEQUENCE, 'subject');
    const spkiT = expectTag(tbs[i + 5], TAG.SEQUENCE, 'subjectPublicKeyInfo');
    const spki = rawOf(der, spkiT).slice();
    const spkiParts = children(der, spkiT);
    const keyBitsT = expectTag(spkiParts[1], TAG.BIT_STRING, 'subjectPublicKey');
    const keyBitString = valueOf(der, keyBitsT);
    if (keyBitString.length < 1 || keyBitString[0] !== 0) throw new DerError('subjectPublicKey has unused bits');
    const publicKeyBits = keyBitString.subarray(1).slice();
    let keyIdentifier: Uint8Array | undefined;
    for (const t of tbs.slice(i + 6)) {
      if (t.tag !== 0xa3) continue;
      const list = children(der, t)[0];
      for (const ext of children(der, expectTag(list, TAG.SEQUENCE, 'Extensions'))) {
        const parts = children(der, ext);
        if (decodeOid(valueOf(der, expectTag(parts[0], TAG.OID, 'extnID'))) !== OID.subjectKeyIdentifier) continue;
        const extnValue = valueOf(der, expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extnValue'));
        const inner = readWhole(extnValue, TAG.OCTET_STRING);
        keyIdentifier = valueOf(extnValue, inner).slice();
      }
    }
    keyIdentifier ??= sha1(publicKeyBits);
    return { subject: rawOf(der, subjectT).slice(), spki, publicKeyBits, keyIdentifier };
  } catch (e) {
    if (e instanceof DerError) throw new CertificateParseError(`malformed certificate: ${e.message}`);
    throw e;
  }
}

/** Refuses to sign under a certificate whose key is not the signer's: the result would never verify. */
export function assertSignerMatches(signer: Signer, certSpki: Uint8Array, what: string): void {
  if (!bytesEqual(signer.spki, certSpki)) throw new Error(`the signer's key is not the key of the ${what} certificate`);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export const sha1 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('sha1').update(data).digest());

export function extension(extnId: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(extnId), DER_TRUE, octetString(value)) : seq(oid(extnId), octetString(value));
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } */
export function authorityKeyIdentifierValue(keyIdentifier: Uint8Array): Uint8Array {
  return seq(tlv(0x80, keyIdentifier));
}

/**
 * A positive serial of at most 20 octets (RFC 5280 4.1.2.2), as INTEGER DER. Given as big-endian
 * magnitude so that database hex and certificate bytes can't disagree about sign.
 */
export function serialInteger(serial: Uint8Array): Uint8Array {
  const content = unsignedIntegerContent(serial);
  if (content.length > 20) throw new RangeError('a serial number has at most 20 octets');
  if (content.length === 1 && content[0] === 0) throw new RangeError('a serial number must be positive');
  return tlv(TAG.INTEGER, content);
}

// ---------------------------------------------------------------------------------------------
// The delegated responder certificate

export interface OcspSignerCertificateOptions {
  issuer: { certificate: Uint8Array; signer: Signer };
  /** DER SubjectPublicKeyInfo of the responder key. */
  subjectPublicKeyInfo: Uint8Array;
  /** Big-endian magnitude, 1..20 octets. */
  serial: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  commonName: string;
}

const UB_COMMON_NAME = 64;

/**
 * Issues the certificate a delegated responder signs OCSP responses with. It carries
 * id-pkix-ocsp-nocheck because clients have no way to check the responder's own revocation status
 * without looping back into OCSP; that makes its lifetime the revocation window, so keep it short.
 */
export async function buildOcspSignerCertificate(opts: OcspSignerCertificateOptions): Promise<Uint8Array> {
  const issuer = readIssuerCertificate(opts.issuer.certificate);
  assertSignerMatches(opts.issuer.signer, issuer.spki, 'issuer');
  const subjectKey = inspectSpki(opts.subjectPublicKeyInfo);
  if (!(opts.notBefore.getTime() < opts.notAfter.getTime())) throw new RangeError('notBefore must be before notAfter');
  const cn = opts.commonName;
  if (cn.length === 0 || [...cn].length > UB_COMMON_NAME)
    throw new RangeError(`commonName must be 1..${UB_COMMON_NAME} characters`);

  const sigAlg = signatureAlgorithmIdentifier(opts.issuer.signer.algorithm);
  const subject = seq(tlv(TAG.SET, seq(oid(OID.commonName), tlv(TAG.UTF8_STRING, new TextEncoder().encode(cn)))));
  const extensions = [
    extension(OID.basicConstraints, true, seq()),
    // digitalSignature only: BIT STRING with 7 unused bits, first bit set.
    extension(OID.keyUsage, true, Uint8Array.of(TAG.BIT_STRING, 2, 7, 0x80)),
    extension(OID.extKeyUsage, false, seq(oid(OID.ocspSigning))),
    extension(ID_PKIX_OCSP_NOCHECK, false, DER_NULL),
    extension(OID.subjectKeyIdentifier, false, octetString(sha1(subjectKey.publicKeyBits))),
    extension(OID.authorityKeyIdentifier, false, authorityKeyIdentifierValue(issuer.keyIdentifier)),
  ];
  const tbs = seq(
    tlv(0xa0, smallInteger(2)),
    serialInteger(opts.serial),
    sigAlg,
    issuer.subject,
    seq(encodeTime(opts.notBefore), encodeTime(opts.notAfter)),
    subject,
    opts.subjectPublicKeyInfo,
    tlv(0xa3, seq(...extensions)),
  );
  return signAndWrap(opts.issuer.signer, tbs, sigAlg, { purpose: 'ocsp-signer-certificate' });
}
