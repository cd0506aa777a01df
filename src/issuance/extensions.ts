import { children, decodeOid, DerError, readWhole, TAG, valueOf } from '../ca/der.ts';
import { OID } from '../ca/oids.ts';
import type { Profile } from '../config/schema.ts';
import { KeywardError } from '../core/errors.ts';
import type { RequestedExtension } from './request.ts';

/** RFC 7633 TLS feature extension; the value 5 is status_request (OCSP must-staple). */
export const OID_TLS_FEATURE = '1.3.6.1.5.5.7.1.24';
const STATUS_REQUEST = 5;

const EKU_NAMES: Record<string, Profile['extKeyUsages'][number]> = {
  '1.3.6.1.5.5.7.3.1': 'serverAuth',
  '1.3.6.1.5.5.7.3.2': 'clientAuth',
  '1.3.6.1.5.5.7.3.3': 'codeSigning',
  '1.3.6.1.5.5.7.3.4': 'emailProtection',
};

/** What the requested extensions add to the certificate once every one of them was decided. */
export interface ExtensionOutcome {
  mustStaple: boolean;
}

const badCsr = (detail: string) => new KeywardError('badCSR', detail);

function sequenceOf(value: Uint8Array, what: string): { buf: Uint8Array; items: ReturnType<typeof children> } {
  try {
    const top = readWhole(value, TAG.SEQUENCE);
    return { buf: value, items: children(value, top) };
  } catch (err) {
    if (err instanceof DerError) throw badCsr(`the CSR's ${what} extension is not valid DER: ${err.message}`);
    throw err;
  }
}

/**
 * Each requested extension is honoured, or refused with badCSR naming it; none is dropped:
 *
 * - subjectAltName: the names (read by the CSR reader, decided by the name checks).
 * - TLS feature status_request (OCSP must-staple, RFC 7633, `certbot --must-staple`): honoured
 *   when the profile allows it (`mustStaple`) and the certificate carries an OCSP URL, since a
 *   must-staple certificate without one could never be served; refused otherwise.
 * - extendedKeyUsage: accepted when the profile carries every usage asked for (the certificate
 *   gets the profile's list); a usage the profile lacks is refused, naming it.
 * - basicConstraints: cA false is what every leaf says; cA true is refused (no CA certificates
 *   from this path). keyUsage and subjectKeyIdentifier: the CA sets them from the key itself
 *   (RFC 5280 §4.2.1.2, §4.2.1.3), so a request for them is satisfied by construction.
 * - Anything else: refused, naming its OID, because the certificate would not carry it.
 */
export function decideExtensions(
  profile: Profile,
  requested: readonly RequestedExtension[],
  hasOcspUrl: boolean,
): ExtensionOutcome {
  let mustStaple = false;
  for (const ext of requested) {
    switch (ext.oid) {
      case OID.subjectAltName:
      case OID.keyUsage:
      case OID.subjectKeyIdentifier:
        break;
      case OID.basicConstraints: {
        const { buf, items } = sequenceOf(ext.value, 'basicConstraints');
        const first = items[0];
        if (first?.tag === TAG.BOOLEAN && valueOf(buf, first)[0] !== 0)
          throw badCsr(
            'the CSR asks for a CA certificate (basicConstraints cA true); only end-entity certificates are issued here',
          );
        break;
      }
      case OID.extKeyUsage: {
        const { buf, items } = sequenceOf(ext.value, 'extendedKeyUsage');
        const asked = items.map((t) => {
          if (t.tag !== TAG.OID) throw badCsr("the CSR's extendedKeyUsage holds a non-OID");
          const id = decodeOid(valueOf(buf, t));
          return EKU_NAMES[id] ?? id;
        });
        const missing = asked.filter((u) => !(profile.extKeyUsages as string[]).includes(u));
        if (missing.length > 0)
          throw badCsr(
            `the CSR asks for extendedKeyUsage ${missing.join(', ')}, which profile ${profile.name} does not carry (it has ${profile.extKeyUsages.join(', ')})`,
          );
        break;
      }
      case OID_TLS_FEATURE: {
        const { buf, items } = sequenceOf(ext.value, 'TLS feature');
        const features = items.map((t) => {
          const v = valueOf(buf, t);
          if (t.tag !== TAG.INTEGER || v.length !== 1)
            throw badCsr("the CSR's TLS feature extension holds an unknown feature");
          return v[0]!;
        });
        if (features.some((f) => f !== STATUS_REQUEST))
          throw badCsr(
            `the CSR's TLS feature extension asks for features ${features.join(', ')}; only status_request (5, OCSP must-staple) is supported`,
          );
        if (!profile.mustStaple)
          throw badCsr(
            `the CSR asks for OCSP must-staple (TLS feature extension, ${OID_TLS_FEATURE}), which profile ${profile.name} does not allow`,
          );
        if (!hasOcspUrl)
          throw badCsr(
            `the CSR asks for OCSP must-staple (TLS feature extension, ${OID_TLS_FEATURE}), but certificates of profile ${profile.name} with this lifetime carry no OCSP URL (passive revocation)`,
          );
        mustStaple = true;
        break;
      }
      default:
        throw badCsr(
          `the CSR asks for extension ${ext.oid}${ext.critical ? ' (critical)' : ''}, which profile ${profile.name} does not carry; remove it from the request`,
        );
    }
  }
  return { mustStaple };
}
