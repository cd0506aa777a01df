import { sanCount, type SanSet } from '../core/identifiers.ts';
import type { SignContext } from '../kms/signer.ts';
import { asCertBuildError, CertBuildError } from './cert-build-error.ts';
import {
  authorityInfoAccessExtension,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  certificatePoliciesExtension,
  crlDistributionPointExtension,
  extKeyUsageExtension,
  keyUsageExtension,
  KU,
  mustStapleExtension,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from './cert-extensions.ts';
import { checkIssuer, type IssuerInfo, outlivesIssuer, type ParsedIssuer } from './issuer-certificate.ts';
import { keyIdentifierOf } from './key-identifier.ts';
import { signAndWrap, signatureAlgorithmIdentifier, wrapSigned } from './signature.ts';
import { inspectSpki, type KeyType } from './spki.ts';
import { assembleTbs, commonNameSubject, serialNumberContent, validity } from './tbs-certificate.ts';

/** End-entity (subscriber) certificates, built by the thousand under one issuer. */

export interface LeafSpec {
  /** Unsigned big-endian serial number; carried with its value unchanged (see {@link serialNumberContent}). */
  serial: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo of the subject key. */
  subjectPublicKeyInfo: Uint8Array;
  /** Subject CN. Without it the subject is empty and the SAN extension critical (RFC 5280 4.2.1.6). */
  commonName?: string;
  sans: SanSet;
  /** Extended key usage OIDs, in the order they should appear. */
  extKeyUsages: string[];
  /** Adds keyEncipherment to KeyUsage; only valid for RSA subject keys. */
  keyEncipherment: boolean;
  crlDistributionPoint?: string;
  ocspUrl?: string;
  caIssuersUrl?: string;
  /** Certificate policy OIDs (RFC 5280 4.2.1.4), a profile's extra extension. */
  certificatePolicies?: string[];
  /** TLS feature status_request (RFC 7633 OCSP must-staple), when the request asked for it. */
  mustStaple?: boolean;
}

export interface LeafBuilder {
  readonly issuer: ParsedIssuer;
  /**
   * The DER TBSCertificate for `spec`, without signing. Lets the caller record the to-be-signed
   * data before the signature exists ("serial first").
   */
  tbs(spec: LeafSpec): Uint8Array;
  /**
   * Signs a TBSCertificate produced by {@link tbs} and returns the certificate DER. `context` goes
   * to the key hierarchy's audit log with the key use.
   */
  sign(tbs: Uint8Array, context?: SignContext): Promise<Uint8Array>;
  /** The certificate DER from a TBSCertificate made by {@link tbs} and its signature made elsewhere. */
  wrap(tbs: Uint8Array, signature: Uint8Array): Uint8Array;
  build(spec: LeafSpec, context?: SignContext): Promise<Uint8Array>;
}

const LEAF_BC = basicConstraintsExtension(false);
const LEAF_KU = keyUsageExtension([KU.digitalSignature]);
const LEAF_KU_RSA = keyUsageExtension([KU.digitalSignature, KU.keyEncipherment]);

function checkSubjectKey(spki: Uint8Array): { keyType: KeyType; keyId: Uint8Array } {
  const info = asCertBuildError(() => inspectSpki(spki));
  return { keyType: info.keyType, keyId: keyIdentifierOf(info.publicKeyBits) };
}

/** Small per-issuer memo for extensions that repeat across leaves (EKU sets, URLs). */
class ExtensionCache {
  readonly #map = new Map<string, Uint8Array>();
  get(key: string, make: () => Uint8Array): Uint8Array {
    let v = this.#map.get(key);
    if (v === undefined) {
      v = make();
      if (this.#map.size >= 256) this.#map.clear();
      this.#map.set(key, v);
    }
    return v;
  }
}

/**
 * Prepares everything constant about one issuer once, so that each leaf costs a handful of small
 * allocations, a SHA-1 and the signature.
 */
export function createLeafBuilder(issuer: IssuerInfo): LeafBuilder {
  const parsed = checkIssuer(issuer);
  const signer = issuer.signer;
  const algorithmIdentifier = signatureAlgorithmIdentifier(signer.algorithm);
  const aki = authorityKeyIdentifierExtension(parsed.keyIdentifier);
  const cache = new ExtensionCache();

  const tbs = (spec: LeafSpec): Uint8Array => {
    const serial = serialNumberContent(spec.serial);
    if (outlivesIssuer(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
    const { keyType, keyId } = checkSubjectKey(spec.subjectPublicKeyInfo);
    if (spec.keyEncipherment && keyType.kind !== 'rsa') {
      throw new CertBuildError('keyEncipherment is only valid for RSA subject keys');
    }
    const names = sanCount(spec.sans);
    if (spec.commonName === undefined && names === 0) {
      throw new CertBuildError('a certificate needs a commonName or at least one subjectAltName');
    }

    const extensions: Uint8Array[] = [LEAF_BC, spec.keyEncipherment ? LEAF_KU_RSA : LEAF_KU];
    if (spec.extKeyUsages.length > 0) {
      const ekus = spec.extKeyUsages;
      extensions.push(cache.get(`eku ${ekus.join(' ')}`, () => extKeyUsageExtension(ekus)));
    }
    extensions.push(subjectKeyIdentifierExtension(keyId), aki);
    if (names > 0) extensions.push(subjectAltNameExtension(spec.sans, spec.commonName === undefined));
    const policies = spec.certificatePolicies;
    if (policies !== undefined && policies.length > 0) {
      extensions.push(cache.get(`policies ${policies.join(' ')}`, () => certificatePoliciesExtension(policies)));
    }
    if (spec.mustStaple) extensions.push(cache.get('must-staple', mustStapleExtension));
    const crl = spec.crlDistributionPoint;
    if (crl !== undefined) extensions.push(cache.get(`crl ${crl}`, () => crlDistributionPointExtension(crl)));
    const { ocspUrl, caIssuersUrl } = spec;
    if (ocspUrl !== undefined || caIssuersUrl !== undefined) {
      extensions.push(
        cache.get(`aia ${ocspUrl ?? ''} ${caIssuersUrl ?? ''}`, () =>
          authorityInfoAccessExtension(ocspUrl, caIssuersUrl),
        ),
      );
    }

    return assembleTbs({
      serial,
      algorithmIdentifier,
      issuer: parsed.subject,
      validity: validity(spec.notBefore, spec.notAfter),
      subject: commonNameSubject(spec.commonName),
      spki: spec.subjectPublicKeyInfo,
      extensions,
    });
  };

  const sign = (tbsDer: Uint8Array, context?: SignContext): Promise<Uint8Array> =>
    signAndWrap(signer, tbsDer, algorithmIdentifier, context);

  return {
    issuer: parsed,
    tbs,
    sign,
    wrap: (tbsDer, signature) => wrapSigned(tbsDer, algorithmIdentifier, signature),
    build: async (spec, context) => sign(tbs(spec), context),
  };
}
