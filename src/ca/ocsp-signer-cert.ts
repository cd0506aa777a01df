import type { Signer } from '../kms/signer.ts';
import { asCertBuildError } from './cert-build-error.ts';
import {
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  extKeyUsageExtension,
  keyUsageExtension,
  KU,
  ocspNoCheckExtension,
  subjectKeyIdentifierExtension,
} from './cert-extensions.ts';
import { checkIssuer } from './issuer-certificate.ts';
import { keyIdentifierOf } from './key-identifier.ts';
import { OID } from './oids.ts';
import { signAndWrap, signatureAlgorithmIdentifier } from './signature.ts';
import { inspectSpki } from './spki.ts';
import { assembleTbs, commonNameSubject, serialNumberContent, validity } from './tbs-certificate.ts';

/** The delegated OCSP responder certificate (RFC 6960 4.2.2.2). */

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

/**
 * Issues the certificate a delegated responder signs OCSP responses with. It carries
 * id-pkix-ocsp-nocheck because clients have no way to check the responder's own revocation status
 * without looping back into OCSP; that makes its lifetime the revocation window, so keep it short.
 */
export async function buildOcspSignerCertificate(opts: OcspSignerCertificateOptions): Promise<Uint8Array> {
  const issuer = checkIssuer(opts.issuer);
  const subjectKey = asCertBuildError(() => inspectSpki(opts.subjectPublicKeyInfo));
  const sigAlg = signatureAlgorithmIdentifier(opts.issuer.signer.algorithm);
  const tbs = assembleTbs({
    serial: serialNumberContent(opts.serial),
    algorithmIdentifier: sigAlg,
    issuer: issuer.subject,
    validity: validity(opts.notBefore, opts.notAfter),
    subject: commonNameSubject(opts.commonName),
    spki: opts.subjectPublicKeyInfo,
    extensions: [
      basicConstraintsExtension(false),
      keyUsageExtension([KU.digitalSignature]),
      extKeyUsageExtension([OID.ocspSigning]),
      ocspNoCheckExtension(),
      subjectKeyIdentifierExtension(keyIdentifierOf(subjectKey.publicKeyBits)),
      authorityKeyIdentifierExtension(issuer.keyIdentifier),
    ],
  });
  return signAndWrap(opts.issuer.signer, tbs, sigAlg, { purpose: 'ocsp-signer-certificate' });
}
