import { createHash, createPublicKey, type KeyObject } from 'node:crypto';

import * as asn1js from 'asn1js';

import { sanCount, type SanSet } from '../core/identifiers.ts';
import { parseIp } from '../core/ip.ts';
import type { SignatureAlgorithm, SignContext, Signer } from '../kms/signer.ts';
import {
  bitString,
  children,
  decodeOid,
  decodeTime,
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
import { encodeDnsName, encodeGeneralNames, encodeUri, GN_TAG, NameError } from './general-names.ts';
import { OID } from './oids.ts';
import { inspectSpki, type KeyType, SpkiError } from './spki.ts';

/** A certificate request the signing core refuses to sign (a hard limit, or malformed input). */
export class CertBuildError extends Error {
  override readonly name = 'CertBuildError';
}

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

export interface IssuerInfo {
  /** The issuing CA certificate, DER. */
  certificate: Uint8Array;
  signer: Signer;
}

export interface NameConstraintsSpec {
  permittedDns?: string[];
  excludedDns?: string[];
  /** CIDR blocks, e.g. `10.0.0.0/8`, `fd00::/8`. */
  permittedIp?: string[];
  excludedIp?: string[];
}

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

/** The facts about an issuing CA certificate that certificate assembly depends on. */
export interface ParsedIssuer {
  /** The issuer certificate's subject Name TLV, byte for byte (becomes the issuer field). */
  readonly subject: Uint8Array;
  readonly subjectPublicKeyInfo: Uint8Array;
  /** The issuer's key identifier (its SKI, or RFC 5280 method 1 when it has none). */
  readonly keyIdentifier: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa: boolean;
  /** undefined when the issuer has no path length limit. */
  readonly pathLength: number | undefined;
  /** True unless a KeyUsage extension is present without keyCertSign. */
  readonly canSignCertificates: boolean;
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
  build(spec: LeafSpec, context?: SignContext): Promise<Uint8Array>;
}

// ---------------------------------------------------------------------------------------------
// Constant pieces

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

const OID_CERTIFICATE_POLICIES = '2.5.29.32';
/** RFC 7633 §6: TLS feature, a SEQUENCE of INTEGER features; 5 is status_request. */
const OID_TLS_FEATURE = '1.3.6.1.5.5.7.1.24';

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

const VERSION_3 = Uint8Array.of(0xa0, 0x03, TAG.INTEGER, 0x01, 0x02);
const EMPTY_NAME = Uint8Array.of(TAG.SEQUENCE, 0);

function extension(oidDotted: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(oidDotted), DER_TRUE, octetString(value)) : seq(oid(oidDotted), octetString(value));
}

/** KeyUsage bit positions (RFC 5280 4.2.1.3). */
const KU = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** KeyUsage BIT STRING in DER: named-bit lists drop trailing zero bits. */
function keyUsageValue(bits: readonly number[]): Uint8Array {
  let value = 0;
  for (const b of bits) value |= 0x80 >> b;
  let unused = 0;
  while (unused < 7 && (value & (1 << unused)) === 0) unused++;
  return Uint8Array.of(TAG.BIT_STRING, 2, unused, value);
}

const LEAF_BC = extension(OID.basicConstraints, true, Uint8Array.of(TAG.SEQUENCE, 0));
const LEAF_KU = extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature]));
const LEAF_KU_RSA = extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature, KU.keyEncipherment]));

function sha1(data: Uint8Array): Uint8Array {
  return createHash('sha1').update(data).digest();
}

function skiExtension(keyId: Uint8Array): Uint8Array {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

function akiExtension(keyId: Uint8Array): Uint8Array {
  // keyIdentifier [0] IMPLICIT OCTET STRING
  return extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, keyId)));
}

function ekuExtension(oids: readonly string[]): Uint8Array {
  try {
    return extension(OID.extKeyUsage, false, seq(...oids.map(oid)));
  } catch (e) {
    if (e instanceof DerError) throw new CertBuildError(`invalid extended key usage: ${e.message}`);
    throw e;
  }
}

function crlDpExtension(url: string): Uint8Array {
  // DistributionPoint.distributionPoint [0] (CHOICE, so explicit) -> fullName [0] IMPLICIT GeneralNames
  return extension(OID.crlDistributionPoints, false, seq(seq(tlv(0xa0, tlv(0xa0, encodeUri(url))))));
}

function aiaExtension(ocspUrl: string | undefined, caIssuersUrl: string | undefined): Uint8Array {
  const descriptions: Uint8Array[] = [];
  if (ocspUrl !== undefined) descriptions.push(seq(oid(OID.ocsp), encodeUri(ocspUrl)));
  if (caIssuersUrl !== undefined) descriptions.push(seq(oid(OID.caIssuers), encodeUri(caIssuersUrl)));
  return extension(OID.authorityInfoAccess, false, seq(...descriptions));
}

function wrapNameErrors<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NameError || e instanceof DerError || e instanceof SpkiError) throw new CertBuildError(e.message);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Variable pieces

const MAX_SERIAL_OCTETS = 20; // RFC 5280 4.1.2.2

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

const MAX_CN_LENGTH = 64; // ub-common-name
const utf8 = new TextEncoder();

function utf8Attribute(typeOid: string, value: string, what: string): Uint8Array {
  if (value.length === 0 || [...value].length > MAX_CN_LENGTH) {
    throw new CertBuildError(`${what} must be 1 to ${MAX_CN_LENGTH} characters`);
  }
  // Control characters in names have been used to make one name display as another.
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) throw new CertBuildError(`${what} contains control characters`);
  return tlv(TAG.SET, seq(oid(typeOid), tlv(TAG.UTF8_STRING, utf8.encode(value))));
}

function leafSubject(commonName: string | undefined): Uint8Array {
  if (commonName === undefined) return EMPTY_NAME;
  return seq(utf8Attribute(OID.commonName, commonName, 'commonName'));
}

function validity(notBefore: Date, notAfter: Date): Uint8Array {
  if (!(notBefore.getTime() < notAfter.getTime())) throw new CertBuildError('notBefore must be before notAfter');
  return wrapNameErrors(() => seq(encodeTime(notBefore), encodeTime(notAfter)));
}

interface TbsParts {
  serial: Uint8Array;
  algorithmIdentifier: Uint8Array;
  issuer: Uint8Array;
  validity: Uint8Array;
  subject: Uint8Array;
  spki: Uint8Array;
  extensions: Uint8Array[];
}

function assembleTbs(p: TbsParts): Uint8Array {
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

async function signTbs(
  signer: Signer,
  algorithmIdentifier: Uint8Array,
  tbs: Uint8Array,
  context: SignContext | undefined,
): Promise<Uint8Array> {
  const signature = await signer.sign(tbs, context);
  if (!(signature instanceof Uint8Array) || signature.length === 0) {
    throw new CertBuildError('signer returned no signature');
  }
  return seq(tbs, algorithmIdentifier, bitString(signature));
}

// ---------------------------------------------------------------------------------------------
// Issuer certificate

function publicKeyOf(spki: Uint8Array, what: string): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch {
    throw new CertBuildError(`${what} is not a usable public key`);
  }
}

/** Reads what leaf assembly needs from an issuer certificate (strict DER). */
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
    const keyIdentifier = ski ?? sha1(inspectSpkiBits(spkiBytes));
    return {
      subject: rawOf(cert, subject).slice(),
      subjectPublicKeyInfo: spkiBytes,
      keyIdentifier,
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

/** Public key bits of an issuer SPKI; issuer keys are not subject to the subscriber key policy. */
function inspectSpkiBits(spki: Uint8Array): Uint8Array {
  const root = readWhole(spki, TAG.SEQUENCE);
  const [, key] = children(spki, root);
  const bits = valueOf(spki, expectTag(key, TAG.BIT_STRING, 'subjectPublicKey'));
  return bits.subarray(1);
}

/** Compared at whole seconds, the precision both certificates carry. */
function outlives(notAfter: Date, issuer: ParsedIssuer): boolean {
  return Math.floor(notAfter.getTime() / 1000) * 1000 > issuer.notAfter.getTime();
}

function checkIssuer(issuer: IssuerInfo): ParsedIssuer {
  const parsed = parseIssuerCertificate(issuer.certificate);
  if (!parsed.isCa) throw new CertBuildError('issuer certificate is not a CA (basicConstraints cA is not set)');
  if (!parsed.canSignCertificates) throw new CertBuildError('issuer certificate KeyUsage lacks keyCertSign');
  const certKey = publicKeyOf(parsed.subjectPublicKeyInfo, 'issuer certificate key');
  const signerKey = publicKeyOf(issuer.signer.spki, 'signer key');
  if (!certKey.equals(signerKey)) throw new CertBuildError('signer key does not match the issuer certificate');
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Leaves

function checkSubjectKey(spki: Uint8Array): { keyType: KeyType; keyId: Uint8Array } {
  const info = wrapNameErrors(() => inspectSpki(spki));
  return { keyType: info.keyType, keyId: sha1(info.publicKeyBits) };
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
  const aki = akiExtension(parsed.keyIdentifier);
  const cache = new ExtensionCache();

  const tbs = (spec: LeafSpec): Uint8Array => {
    const serial = serialNumberContent(spec.serial);
    if (outlives(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
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
      extensions.push(cache.get(`eku ${ekus.join(' ')}`, () => ekuExtension(ekus)));
    }
    extensions.push(skiExtension(keyId), aki);
    if (names > 0) {
      const generalNames = wrapNameErrors(() => encodeGeneralNames(spec.sans));
      extensions.push(extension(OID.subjectAltName, spec.commonName === undefined, seq(...generalNames)));
    }
    const policies = spec.certificatePolicies;
    if (policies !== undefined && policies.length > 0) {
      extensions.push(
        cache.get(`policies ${policies.join(' ')}`, () =>
          extension(OID_CERTIFICATE_POLICIES, false, seq(...policies.map((p) => seq(oid(p))))),
        ),
      );
    }
    if (spec.mustStaple)
      extensions.push(cache.get('must-staple', () => extension(OID_TLS_FEATURE, false, seq(smallInteger(5)))));
    const crl = spec.crlDistributionPoint;
    if (crl !== undefined) extensions.push(cache.get(`crl ${crl}`, () => wrapNameErrors(() => crlDpExtension(crl))));
    const { ocspUrl, caIssuersUrl } = spec;
    if (ocspUrl !== undefined || caIssuersUrl !== undefined) {
      extensions.push(
        cache.get(`aia ${ocspUrl ?? ''} ${caIssuersUrl ?? ''}`, () =>
          wrapNameErrors(() => aiaExtension(ocspUrl, caIssuersUrl)),
        ),
      );
    }

    return assembleTbs({
      serial,
      algorithmIdentifier,
      issuer: parsed.subject,
      validity: validity(spec.notBefore, spec.notAfter),
      subject: leafSubject(spec.commonName),
      spki: spec.subjectPublicKeyInfo,
      extensions,
    });
  };

  const sign = (tbsDer: Uint8Array, context?: SignContext): Promise<Uint8Array> =>
    signTbs(signer, algorithmIdentifier, tbsDer, context);

  return {
    issuer: parsed,
    tbs,
    sign,
    build: async (spec, context) => sign(tbs(spec), context),
  };
}

// ---------------------------------------------------------------------------------------------
// CA certificates

function caSubject(s: CaSpec['subject']): Uint8Array {
  // Built with asn1js (once per CA, not a hot path); most significant attribute first.
  const rdn = (type: string, value: string, what: string): asn1js.Set => {
    // Reuse the hand-written checks so CA and leaf names obey the same limits.
    utf8Attribute(type, value, what);
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

function nameConstraintsExtension(nc: NameConstraintsSpec): Uint8Array | undefined {
  const subtrees = (dns: string[] | undefined, ip: string[] | undefined): Uint8Array[] => [
    ...(dns ?? []).map((d) => {
      if (d.startsWith('*')) throw new CertBuildError(`name constraint ${d} must not be a wildcard`);
      return seq(wrapNameErrors(() => encodeDnsName(d)));
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

function caTbs(
  spec: CaSpec,
  issuerName: Uint8Array,
  algorithmIdentifier: Uint8Array,
  authorityKeyId: Uint8Array | undefined,
): Uint8Array {
  const serial = serialNumberContent(spec.serial);
  const info = wrapNameErrors(() => inspectSpkiBits(spec.subjectPublicKeyInfo));
  publicKeyOf(spec.subjectPublicKeyInfo, 'CA subject key');
  const keyId = sha1(info);
  const subject = caSubject(spec.subject);

  const bc: Uint8Array[] = [DER_TRUE];
  if (spec.pathLength !== undefined) {
    if (!Number.isInteger(spec.pathLength) || spec.pathLength < 0) throw new CertBuildError('bad pathLength');
    bc.push(smallInteger(spec.pathLength));
  }
  const ku: number[] = [KU.keyCertSign, KU.cRLSign];
  if (spec.digitalSignature ?? true) ku.unshift(KU.digitalSignature);

  const extensions: Uint8Array[] = [
    extension(OID.basicConstraints, true, seq(...bc)),
    extension(OID.keyUsage, true, keyUsageValue(ku)),
  ];
  if (spec.extKeyUsages !== undefined && spec.extKeyUsages.length > 0) extensions.push(ekuExtension(spec.extKeyUsages));
  extensions.push(skiExtension(keyId));
  if (authorityKeyId !== undefined) extensions.push(akiExtension(authorityKeyId));
  if (spec.nameConstraints !== undefined) {
    const nc = nameConstraintsExtension(spec.nameConstraints);
    if (nc !== undefined) extensions.push(nc);
  }
  if (spec.crlDistributionPoint !== undefined) {
    const url = spec.crlDistributionPoint;
    extensions.push(wrapNameErrors(() => crlDpExtension(url)));
  }
  if (spec.ocspUrl !== undefined || spec.caIssuersUrl !== undefined) {
    extensions.push(wrapNameErrors(() => aiaExtension(spec.ocspUrl, spec.caIssuersUrl)));
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
  return signTbs(signer, algorithmIdentifier, caTbs(spec, subject, algorithmIdentifier, undefined), context);
}

/** An intermediate CA under `issuer`, within the issuer's path length and lifetime. */
export async function buildSubordinateCa(spec: CaSpec, issuer: IssuerInfo, context?: SignContext): Promise<Uint8Array> {
  const parsed = checkIssuer(issuer);
  if (parsed.pathLength !== undefined) {
    if (parsed.pathLength === 0) throw new CertBuildError('issuer path length does not allow subordinate CAs');
    if (spec.pathLength === undefined || spec.pathLength > parsed.pathLength - 1) {
      throw new CertBuildError(`pathLength must be at most ${parsed.pathLength - 1} under this issuer`);
    }
  }
  if (outlives(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
  const algorithmIdentifier = signatureAlgorithmIdentifier(issuer.signer.algorithm);
  return signTbs(
    issuer.signer,
    algorithmIdentifier,
    caTbs(spec, parsed.subject, algorithmIdentifier, parsed.keyIdentifier),
    context,
  );
}

/** PEM armour for a DER certificate. */
export function certificateToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
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
  const parsed = checkIssuer(issuer);
  if (outlives(spec.notAfter, parsed)) throw new CertBuildError('certificate would outlive its issuer');
  const algorithmIdentifier = signatureAlgorithmIdentifier(issuer.signer.algorithm);
  return signTbs(
    issuer.signer,
    algorithmIdentifier,
    caTbs(spec, parsed.subject, algorithmIdentifier, parsed.keyIdentifier),
    context,
  );
}
