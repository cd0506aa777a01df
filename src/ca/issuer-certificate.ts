import { createPublicKey, type KeyObject } from 'node:crypto';

import { bytesEqual } from '../core/bytes.ts';
import type { Signer } from '../kms/signer.ts';
import { CertBuildError } from './cert-build-error.ts';
import { KU } from './cert-extensions.ts';
import { children, decodeOid, decodeTime, DerError, expectTag, rawOf, readWhole, TAG, valueOf } from './der.ts';
import { keyIdentifierOf, publicKeyBitsOf } from './key-identifier.ts';
import { OID } from './oids.ts';

/** An issuing CA: its certificate and the Signer holding its key. */
export interface IssuerInfo {
  /** The issuing CA certificate, DER. */
  certificate: Uint8Array;
  signer: Signer;
}

/** The facts about an issuing CA certificate that certificates, CRLs and OCSP responses under it depend on. */
export interface ParsedIssuer {
  /** The issuer certificate's subject Name TLV, byte for byte (becomes the issuer field). */
  readonly subject: Uint8Array;
  readonly subjectPublicKeyInfo: Uint8Array;
  /** subjectPublicKey BIT STRING content without the unused-bits octet. */
  readonly publicKeyBits: Uint8Array;
  /**
   * What an authorityKeyIdentifier pointing at this certificate must hold: its own SKI when it has
   * one (chain builders match on it), else the RFC 5280 4.2.1.2 method-1 SHA-1 of the key bits.
   */
  readonly keyIdentifier: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa: boolean;
  /** undefined when the issuer has no path length limit. */
  readonly pathLength: number | undefined;
  /** True unless a KeyUsage extension is present without keyCertSign. */
  readonly canSignCertificates: boolean;
}

/** Reads an issuer certificate (strict DER). */
export function parseIssuerCertificate(cert: Uint8Array): ParsedIssuer {
  try {
    const root = readWhole(cert, TAG.SEQUENCE);
    const [tbsTlv] = children(cert, root);
    const fields = children(cert, expectTag(tbsTlv, TAG.SEQUENCE, 'TBSCertificate'));
    let i = fields[0]?.tag === 0xa0 ? 1 : 0;
    i += 2; // serialNumber, signature
    expectTag(fields[i++], TAG.SEQUENCE, 'issuer');
    const validityTlv = expectTag(fields[i++], TAG.SEQUENCE, 'validity');
    const subject = expectTag(fields[i++], TAG.SEQUENCE, 'subject');
    const spki = expectTag(fields[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
    const [nb, na] = children(cert, validityTlv);
    if (nb === undefined || na === undefined) throw new DerError('bad validity');

    let ski: Uint8Array | undefined;
    let isCa = false;
    let pathLength: number | undefined;
    let canSignCertificates = true;
    const extsWrapper = fields.slice(i).find((t) => t.tag === 0xa3);
    if (extsWrapper !== undefined) {
      const [extSeq] = children(cert, extsWrapper);
      for (const ext of children(cert, expectTag(extSeq, TAG.SEQUENCE, 'extensions'))) {
        const parts = children(cert, ext);
        const id = decodeOid(valueOf(cert, expectTag(parts[0], TAG.OID, 'extension id')));
        const value = valueOf(cert, expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extension value'));
        if (id === OID.subjectKeyIdentifier) {
          ski = valueOf(value, readWhole(value, TAG.OCTET_STRING)).slice();
        } else if (id === OID.basicConstraints) {
          const bc = readWhole(value, TAG.SEQUENCE);
          for (const f of children(value, bc)) {
            if (f.tag === TAG.BOOLEAN) isCa = value[f.valueStart] !== 0;
            else if (f.tag === TAG.INTEGER) pathLength = integerValue(valueOf(value, f));
          }
        } else if (id === OID.keyUsage) {
          const ku = valueOf(value, readWhole(value, TAG.BIT_STRING));
          canSignCertificates = ku.length >= 2 && (ku[1]! & (0x80 >> KU.keyCertSign)) !== 0;
        }
      }
    }
    const spkiBytes = rawOf(cert, spki).slice();
    const publicKeyBits = publicKeyBitsOf(spkiBytes).slice();
    return {
      subject: rawOf(cert, subject).slice(),
      subjectPublicKeyInfo: spkiBytes,
      publicKeyBits,
      keyIdentifier: ski ?? keyIdentifierOf(publicKeyBits),
      notBefore: decodeTime(cert, nb),
      notAfter: decodeTime(cert, na),
      isCa,
      pathLength,
      canSignCertificates,
    };
  } catch (e) {
    if (e instanceof DerError) throw new CertBuildError(`issuer certificate is malformed: ${e.message}`);
    throw e;
  }
}

function integerValue(content: Uint8Array): number {
  if (content.length === 0 || content.length > 4 || (content[0]! & 0x80) !== 0) throw new DerError('bad INTEGER');
  let n = 0;
  for (const b of content) n = n * 256 + b;
  return n;
}

export function publicKeyOf(spki: Uint8Array, what: string): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch {
    throw new CertBuildError(`${what} is not a usable public key`);
  }
}

/**
 * An issuer that may sign certificates: a CA whose KeyUsage allows keyCertSign, and whose key the
 * signer holds (otherwise nothing it signs would verify).
 */
export function checkIssuer(issuer: IssuerInfo): ParsedIssuer {
  const parsed = parseIssuerCertificate(issuer.certificate);
  if (!parsed.isCa) throw new CertBuildError('issuer certificate is not a CA (basicConstraints cA is not set)');
  if (!parsed.canSignCertificates) throw new CertBuildError('issuer certificate KeyUsage lacks keyCertSign');
  const certKey = publicKeyOf(parsed.subjectPublicKeyInfo, 'issuer certificate key');
  const signerKey = publicKeyOf(issuer.signer.spki, 'signer key');
  if (!certKey.equals(signerKey)) throw new CertBuildError('signer key does not match the issuer certificate');
  return parsed;
}

/** Refuses to sign under a certificate whose key is not the signer's: the result would never verify. */
export function assertSignerMatches(signer: Signer, certSpki: Uint8Array, what: string): void {
  if (!bytesEqual(signer.spki, certSpki)) throw new Error(`the signer's key is not the key of the ${what} certificate`);
}

/** Whether a certificate ending at `notAfter` would outlive its issuer, compared at whole seconds (both carry no more). */
export function outlivesIssuer(notAfter: Date, issuer: ParsedIssuer): boolean {
  return Math.floor(notAfter.getTime() / 1000) * 1000 > issuer.notAfter.getTime();
}
