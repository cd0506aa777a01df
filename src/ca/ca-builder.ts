import type { SignContext, Signer } from '../kms/signer.ts';
import { asCertBuildError, CertBuildError } from './cert-build-error.ts';
import {
  authorityInfoAccessExtension,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  crlDistributionPointExtension,
  extKeyUsageExtension,
  keyUsageExtension,
  KU,
  nameConstraintsExtension,
  type NameConstraintsSpec,
  subjectKeyIdentifierExtension,
} from './cert-extensions.ts';
import { checkIssuer, type IssuerInfo, outlivesIssuer, type ParsedIssuer, publicKeyOf } from './issuer-certificate.ts';
import { keyIdentifierOf, publicKeyBitsOf } from './key-identifier.ts';
import { signAndWrap, signatureAlgorithmIdentifier } from './signature.ts';
import { assembleTbs, caSubject, serialNumberContent, validity } from './tbs-certificate.ts';

/** CA certificates: roots, intermediates and cross-certificates. */

export interface CaSpec {
  serial: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  subject: { commonName: string; organization?: string };
  subjectPublicKeyInfo: Uint8Array;
  /** Maximum number of CA certificates below this one; undefined means no limit. */
  pathLength?: number;
  nameConstraints?: NameConstraintsSpec;
  /** Restricts what the CA may issue for (CA/B-style EKU in intermediates); omitted when empty. */
  extKeyUsages?: string[];
  /** KeyUsage digitalSignature, needed when the CA key signs OCSP responses itself. Default true. */
  digitalSignature?: boolean;
  crlDistributionPoint?: string;
  ocspUrl?: string;
  caIssuersUrl?: string;
}

function caTbs(
  spec: CaSpec,
  issuerName: Uint8Array,
  algorithmIdentifier: Uint8Array,
  authorityKeyId: Uint8Array | undefined,
): Uint8Array {
  const serial = serialNumberContent(spec.serial);
  const keyBits = asCertBuildError(() => publicKeyBitsOf(spec.subjectPublicKeyInfo));
  publicKeyOf(spec.subjectPublicKeyInfo, 'CA subject key');
  const subject = caSubject(spec.subject);

  const ku: number[] = [KU.keyCertSign, KU.cRLSign];
  if (spec.digitalSignature ?? true) ku.unshift(KU.digitalSignature);

  const extensions: Uint8Array[] = [basicConstraintsExtension({ pathLength: spec.pathLength }), keyUsageExtension(ku)];
  if (spec.extKeyUsages !== undefined && spec.extKeyUsages.length > 0) {
    extensions.push(extKeyUsageExtension(spec.extKeyUsages));
  }
  extensions.push(subjectKeyIdentifierExtension(keyIdentifierOf(keyBits)));
  if (authorityKeyId !== undefined) extensions.push(authorityKeyIdentifierExtension(authorityKeyId));
  if (spec.nameConstraints !== undefined) {
    const nc = nameConstraintsExtension(spec.nameConstraints);
    if (nc !== undefined) extensions.push(nc);
  }
  if (spec.crlDistributionPoint !== undefined)
    extensions.push(crlDistributionPointExtension(spec.crlDistributionPoint));
  if (spec.ocspUrl !== undefined || spec.caIssuersUrl !== undefined) {
    extensions.push(authorityInfoAccessExtension(spec.ocspUrl, spec.caIssuersUrl));
  }

  return assembleTbs({
    serial,
    algorithmIdentifier,
    issuer: issuerName,
    validity: validity(spec.notBefore, spec.notAfter),
    subject,
    spki: spec.subjectPublicKeyInfo,
    extensions,
  });
}

/** A root: issuer = subject, signed by the key the certificate certifies. */
export async function buildSelfSignedCa(spec: CaSpec, signer: Signer, context?: SignContext): Promise<Uint8Array> {
  const own = publicKeyOf(spec.subjectPublicKeyInfo, 'CA subject key');
  if (!own.equals(publicKeyOf(signer.spki, 'signer key'))) {
    throw new CertBuildError('a self-signed CA must be signed by its own key');
  }
  const algorithmIdentifier = signatureAlgorithmIdentifier(signer.algorithm);
  const subject = caSubject(spec.subject);
  // RFC 5280 4.2.1.1 lets a self-signed certificate omit the AKI; we do.
  return signAndWrap(signer, caTbs(spec, subject, algorithmIdentifier, undefined), algorithmIdentifier, context);
}

/** An intermediate CA under `issuer`, within the issuer's path length and lifetime. */
export async function buildSubordinateCa(spec: CaSpec, issuer: IssuerInfo, context?: SignContext): Promise<Uint8Array> {
  return prepareSubordinateCa(spec, issuer).sign(context);
}

/**
 * The TBSCertificate of an intermediate CA, and a function that signs it: lets the caller record
 * the to-be-signed data before the signature exists ("serial first").
 */
export function prepareSubordinateCa(
  spec: CaSpec,
  issuer: IssuerInfo,
): { tbs: Uint8Array; sign(context?: SignContext): Promise<Uint8Array> } {
  const parsed = checkIssuer(issuer);
  if (parsed.pathLength !== undefined) {
    if (parsed.pathLength === 0) throw new CertBuildError('issuer path length does not allow subordinate CAs');
    if (spec.pathLength === undefined || spec.pathLength > parsed.pathLength - 1) {
      throw new CertBuildError(`pathLength must be at most ${parsed.pathLength - 1} under this issuer`);
    }
  }
  if (outlivesIssuer(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
  const algorithmIdentifier = signatureAlgorithmIdentifier(issuer.signer.algorithm);
  const tbs = caTbs(spec, parsed.subject, algorithmIdentifier, parsed.keyIdentifier);
  return { tbs, sign: (context) => signAndWrap(issuer.signer, tbs, algorithmIdentifier, context) };
}

/**
 * A cross-certificate: one root certifies another root's name and key, so a relying party that
 * trusts either validates paths through both (RFC 5280 §3.2). The signing root's own path length
 * is not applied: a trust anchor's basicConstraints take no part in path validation (RFC 5280
 * §6.1.1 (d)), and roots certify each other with the path length of the root certified.
 */
export async function buildCrossCertificate(
  spec: CaSpec,
  issuer: IssuerInfo,
  context?: SignContext,
): Promise<Uint8Array> {
  return signUnder(spec, issuer, checkIssuer(issuer), context);
}

async function signUnder(
  spec: CaSpec,
  issuer: IssuerInfo,
  parsed: ParsedIssuer,
  context: SignContext | undefined,
): Promise<Uint8Array> {
  if (outlivesIssuer(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
  const algorithmIdentifier = signatureAlgorithmIdentifier(issuer.signer.algorithm);
  const tbs = caTbs(spec, parsed.subject, algorithmIdentifier, parsed.keyIdentifier);
  return signAndWrap(issuer.signer, tbs, algorithmIdentifier, context);
}
