import * as asn1js from 'asn1js';

import type { SignatureAlgorithm, SignContext, Signer } from '../kms/signer.ts';
import { CertBuildError } from './cert-build-error.ts';
import { bitString, seq } from './der.ts';
import { OID } from './oids.ts';

/**
 * Signing a to-be-signed structure with a Signer, the one step certificates, CRLs and OCSP
 * responses share: the AlgorithmIdentifier naming the signature, and the SIGNED{} wrapper.
 */

const SHA256_ALG = () =>
  new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.sha256 }), new asn1js.Null()] });

const SIGNATURE_OIDS: Record<SignatureAlgorithm, { oid: string; params?: () => asn1js.AsnType }> = {
  'ecdsa-sha256': { oid: OID.ecdsaWithSha256 },
  'ecdsa-sha384': { oid: OID.ecdsaWithSha384 },
  // RFC 4055 2.1: the parameters of the PKCS#1 v1.5 OIDs are NULL, not absent.
  'rsa-sha256': { oid: OID.sha256WithRsa, params: () => new asn1js.Null() },
  // RFC 4055 3.1: RSASSA-PSS-params with SHA-256, MGF1-SHA-256, salt 32 (trailerField default).
  'rsa-pss-sha256': {
    oid: OID.rsassaPss,
    params: () =>
      new asn1js.Sequence({
        value: [
          new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [SHA256_ALG()] }),
          new asn1js.Constructed({
            idBlock: { tagClass: 3, tagNumber: 1 },
            value: [new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.mgf1 }), SHA256_ALG()] })],
          }),
          new asn1js.Constructed({
            idBlock: { tagClass: 3, tagNumber: 2 },
            value: [new asn1js.Integer({ value: 32 })],
          }),
        ],
      }),
  },
  ed25519: { oid: OID.ed25519 },
};

const algIdCache = new Map<SignatureAlgorithm, Uint8Array>();

/** DER AlgorithmIdentifier of the signature a Signer of this algorithm produces. */
export function signatureAlgorithmIdentifier(alg: SignatureAlgorithm): Uint8Array {
  let der = algIdCache.get(alg);
  if (der === undefined) {
    const entry = SIGNATURE_OIDS[alg];
    if (entry === undefined) throw new CertBuildError(`unknown signature algorithm ${String(alg)}`);
    const parts: asn1js.AsnType[] = [new asn1js.ObjectIdentifier({ value: entry.oid })];
    if (entry.params) parts.push(entry.params());
    der = new Uint8Array(new asn1js.Sequence({ value: parts }).toBER(false));
    algIdCache.set(alg, der);
  }
  return der;
}

/**
 * SIGNED{ToBeSigned} ::= SEQUENCE { tbs, algorithm, BIT STRING }. The algorithm identifier inside
 * the TBS must equal `sigAlg`, so callers build it from the same signer first. `context` goes to
 * the key hierarchy's audit log with the key use.
 */
export async function signAndWrap(
  signer: Signer,
  tbs: Uint8Array,
  sigAlg: Uint8Array,
  context?: SignContext,
): Promise<Uint8Array> {
  return wrapSigned(tbs, sigAlg, await signer.sign(tbs, context));
}

/** SIGNED{ToBeSigned} from a signature already made (see signAndWrap). */
export function wrapSigned(tbs: Uint8Array, sigAlg: Uint8Array, signature: Uint8Array): Uint8Array {
  if (!(signature instanceof Uint8Array) || signature.length === 0) {
    throw new CertBuildError('signer returned no signature');
  }
  return seq(tbs, sigAlg, bitString(signature));
}
