import * as asn1js from 'asn1js';

import { asCertBuildError, CertBuildError } from './cert-build-error.ts';
import { encodeTime, oid, seq, TAG, tlv, unsignedIntegerContent } from './der.ts';
import { OID } from './oids.ts';

/** The fields of a TBSCertificate (RFC 5280 4.1) every certificate we build shares, and their limits. */

const VERSION_3 = Uint8Array.of(0xa0, 0x03, TAG.INTEGER, 0x01, 0x02);
const EMPTY_NAME = Uint8Array.of(TAG.SEQUENCE, 0);
const MAX_SERIAL_OCTETS = 20; // RFC 5280 4.1.2.2
const MAX_NAME_LENGTH = 64; // ub-common-name, ub-organization-name
const utf8 = new TextEncoder();

/**
 * The INTEGER content octets a serial is encoded with. The caller's bytes are read as an unsigned
 * number, so the database can store either form and they denote the same serial.
 */
export function serialNumberContent(serial: Uint8Array): Uint8Array {
  const content = unsignedIntegerContent(serial);
  if (content.length === 1 && content[0] === 0) throw new CertBuildError('serial number must be positive');
  if (content.length > MAX_SERIAL_OCTETS) {
    throw new CertBuildError(`serial number is longer than ${MAX_SERIAL_OCTETS} octets`);
  }
  return content;
}

function checkNameValue(value: string, what: string): void {
  if (value.length === 0 || [...value].length > MAX_NAME_LENGTH) {
    throw new CertBuildError(`${what} must be 1 to ${MAX_NAME_LENGTH} characters`);
  }
  // Control characters in names have been used to make one name display as another.
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) throw new CertBuildError(`${what} contains control characters`);
}

/** A subject of one commonName, or the empty Name when there is none. */
export function commonNameSubject(commonName: string | undefined): Uint8Array {
  if (commonName === undefined) return EMPTY_NAME;
  checkNameValue(commonName, 'commonName');
  return seq(tlv(TAG.SET, seq(oid(OID.commonName), tlv(TAG.UTF8_STRING, utf8.encode(commonName)))));
}

/** A CA's subject: organization (when given), then commonName, most significant first. */
export function caSubject(s: { commonName: string; organization?: string }): Uint8Array {
  // Built with asn1js (once per CA, not a hot path), under the same limits as leaf names.
  const rdn = (type: string, value: string, what: string): asn1js.Set => {
    checkNameValue(value, what);
    return new asn1js.Set({
      value: [
        new asn1js.Sequence({
          value: [new asn1js.ObjectIdentifier({ value: type }), new asn1js.Utf8String({ value })],
        }),
      ],
    });
  };
  const rdns: asn1js.Set[] = [];
  if (s.organization !== undefined) rdns.push(rdn(OID.organizationName, s.organization, 'organization'));
  rdns.push(rdn(OID.commonName, s.commonName, 'commonName'));
  return new Uint8Array(new asn1js.Sequence({ value: rdns }).toBER(false));
}

export function validity(notBefore: Date, notAfter: Date): Uint8Array {
  if (!(notBefore.getTime() < notAfter.getTime())) throw new CertBuildError('notBefore must be before notAfter');
  return asCertBuildError(() => seq(encodeTime(notBefore), encodeTime(notAfter)));
}

export interface TbsParts {
  /** INTEGER content octets, from {@link serialNumberContent}. */
  serial: Uint8Array;
  algorithmIdentifier: Uint8Array;
  issuer: Uint8Array;
  validity: Uint8Array;
  subject: Uint8Array;
  spki: Uint8Array;
  extensions: Uint8Array[];
}

/** A v3 TBSCertificate from its encoded parts. */
export function assembleTbs(p: TbsParts): Uint8Array {
  return seq(
    VERSION_3,
    tlv(TAG.INTEGER, p.serial),
    p.algorithmIdentifier,
    p.issuer,
    p.validity,
    p.subject,
    p.spki,
    tlv(0xa3, seq(...p.extensions)),
  );
}
