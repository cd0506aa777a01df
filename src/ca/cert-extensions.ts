import type { SanSet } from '../core/identifiers.ts';
import { parseIp } from '../core/ip.ts';
import { asCertBuildError, CertBuildError } from './cert-build-error.ts';
import { DER_NULL, DER_TRUE, DerError, octetString, oid, seq, smallInteger, TAG, tlv } from './der.ts';
import { encodeDnsName, encodeGeneralNames, encodeUri, GN_TAG } from './general-names.ts';
import { OID } from './oids.ts';

/** Encoders for the X.509 v3 extensions (RFC 5280 4.2) that certificates, CRLs and responders carry. */

const OID_CERTIFICATE_POLICIES = '2.5.29.32';
/** RFC 7633 §6: TLS feature, a SEQUENCE of INTEGER features; 5 is status_request. */
const OID_TLS_FEATURE = '1.3.6.1.5.5.7.1.24';
/** RFC 6960 4.2.2.2.1: the responder's own certificate is not checked for revocation. */
const OID_OCSP_NOCHECK = '1.3.6.1.5.5.7.48.1.5';

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
export function extension(oidDotted: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(oidDotted), DER_TRUE, octetString(value)) : seq(oid(oidDotted), octetString(value));
}

/** KeyUsage bit positions (RFC 5280 4.2.1.3). */
export const KU = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** KeyUsage, critical; DER named-bit lists drop trailing zero bits. */
export function keyUsageExtension(bits: readonly number[]): Uint8Array {
  let value = 0;
  for (const b of bits) value |= 0x80 >> b;
  let unused = 0;
  while (unused < 7 && (value & (1 << unused)) === 0) unused++;
  return extension(OID.keyUsage, true, Uint8Array.of(TAG.BIT_STRING, 2, unused, value));
}

/** BasicConstraints, critical: an end entity (empty SEQUENCE), or a CA with an optional path length. */
export function basicConstraintsExtension(ca: { pathLength: number | undefined } | false): Uint8Array {
  if (ca === false) return extension(OID.basicConstraints, true, seq());
  const fields: Uint8Array[] = [DER_TRUE];
  if (ca.pathLength !== undefined) {
    if (!Number.isInteger(ca.pathLength) || ca.pathLength < 0) throw new CertBuildError('bad pathLength');
    fields.push(smallInteger(ca.pathLength));
  }
  return extension(OID.basicConstraints, true, seq(...fields));
}

export function subjectKeyIdentifierExtension(keyId: Uint8Array): Uint8Array {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } */
export function authorityKeyIdentifierExtension(keyId: Uint8Array): Uint8Array {
  return extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, keyId)));
}

export function extKeyUsageExtension(oids: readonly string[]): Uint8Array {
  try {
    return extension(OID.extKeyUsage, false, seq(...oids.map(oid)));
  } catch (e) {
    if (e instanceof DerError) throw new CertBuildError(`invalid extended key usage: ${e.message}`);
    throw e;
  }
}

export function crlDistributionPointExtension(url: string): Uint8Array {
  // DistributionPoint.distributionPoint [0] (CHOICE, so explicit) -> fullName [0] IMPLICIT GeneralNames
  return asCertBuildError(() =>
    extension(OID.crlDistributionPoints, false, seq(seq(tlv(0xa0, tlv(0xa0, encodeUri(url)))))),
  );
}

export function authorityInfoAccessExtension(
  ocspUrl: string | undefined,
  caIssuersUrl: string | undefined,
): Uint8Array {
  return asCertBuildError(() => {
    const descriptions: Uint8Array[] = [];
    if (ocspUrl !== undefined) descriptions.push(seq(oid(OID.ocsp), encodeUri(ocspUrl)));
    if (caIssuersUrl !== undefined) descriptions.push(seq(oid(OID.caIssuers), encodeUri(caIssuersUrl)));
    return extension(OID.authorityInfoAccess, false, seq(...descriptions));
  });
}

/** Certificate policies (RFC 5280 4.2.1.4), as bare policy OIDs without qualifiers. */
export function certificatePoliciesExtension(policies: readonly string[]): Uint8Array {
  return extension(OID_CERTIFICATE_POLICIES, false, seq(...policies.map((p) => seq(oid(p)))));
}

/** TLS feature status_request: OCSP must-staple (RFC 7633). */
export function mustStapleExtension(): Uint8Array {
  return extension(OID_TLS_FEATURE, false, seq(smallInteger(5)));
}

export function ocspNoCheckExtension(): Uint8Array {
  return extension(OID_OCSP_NOCHECK, false, DER_NULL);
}

export interface NameConstraintsSpec {
  permittedDns?: string[];
  excludedDns?: string[];
  /** CIDR blocks, e.g. `10.0.0.0/8`, `fd00::/8`. */
  permittedIp?: string[];
  excludedIp?: string[];
}

function ipSubtree(cidr: string): Uint8Array {
  const m = /^(.+)\/(\d{1,3})$/.exec(cidr);
  const addr = m === null ? null : parseIp(m[1]!);
  const prefix = m === null ? NaN : Number(m[2]);
  if (addr === null || !(prefix <= addr.length * 8)) throw new CertBuildError(`invalid CIDR block ${cidr}`);
  const mask = new Uint8Array(addr.length);
  for (let i = 0; i < prefix; i++) mask[i >> 3]! |= 0x80 >> (i & 7);
  const network = addr.map((b, i) => b & mask[i]!);
  return seq(tlv(GN_TAG.iPAddress, network, mask));
}

/** NameConstraints, or undefined when the spec constrains nothing. */
export function nameConstraintsExtension(nc: NameConstraintsSpec): Uint8Array | undefined {
  const subtrees = (dns: string[] | undefined, ip: string[] | undefined): Uint8Array[] => [
    ...(dns ?? []).map((d) => {
      if (d.startsWith('*')) throw new CertBuildError(`name constraint ${d} must not be a wildcard`);
      return seq(asCertBuildError(() => encodeDnsName(d)));
    }),
    ...(ip ?? []).map(ipSubtree),
  ];
  const permitted = subtrees(nc.permittedDns, nc.permittedIp);
  const excluded = subtrees(nc.excludedDns, nc.excludedIp);
  if (permitted.length === 0 && excluded.length === 0) return undefined;
  const parts: Uint8Array[] = [];
  if (permitted.length > 0) parts.push(tlv(0xa0, ...permitted));
  if (excluded.length > 0) parts.push(tlv(0xa1, ...excluded));
  // RFC 5280 4.2.1.10: conforming CAs MUST mark this extension critical.
  return extension(OID.nameConstraints, true, seq(...parts));
}

/** SubjectAltName; critical when the subject is empty (RFC 5280 4.2.1.6). */
export function subjectAltNameExtension(sans: SanSet, critical: boolean): Uint8Array {
  return extension(OID.subjectAltName, critical, seq(...asCertBuildError(() => encodeGeneralNames(sans))));
}
