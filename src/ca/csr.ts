import { createPublicKey, type KeyObject, verify } from 'node:crypto';

import { KeywardError } from '../core/errors.ts';
import { emptySans, type SanSet } from '../core/identifiers.ts';
import { formatIp } from '../core/ip.ts';
import { children, decodeOid, DerError, expectTag, oid, rawOf, readWhole, TAG, type Tlv, valueOf } from './der.ts';
import { GN_TAG } from './general-names.ts';
import { OID } from './oids.ts';
import { inspectSpki, type KeyType, SpkiError, type SpkiInfo } from './spki.ts';

export const MAX_CSR_BYTES = 64 * 1024;

export interface ParsedCsr {
  /** The CSR as DER. */
  der: Uint8Array;
  /** DER SubjectPublicKeyInfo, byte for byte as in the CSR. */
  subjectPublicKeyInfo: Uint8Array;
  keyType: KeyType['kind'];
  /** Modulus size, for RSA keys only. */
  rsaBits?: number;
  commonName?: string;
  /** From the extensionRequest attribute; IP addresses in canonical text form. */
  sans: SanSet;
  /** The other extensions the CSR asks for, in its order; the issuance decision honours or refuses each. */
  extensions: CsrExtension[];
}

/** A requested extension other than subjectAltName, undecoded. */
export interface CsrExtension {
  /** Dotted OID. */
  oid: string;
  critical: boolean;
  /** The extnValue content (DER of the extension's value). */
  value: Uint8Array;
}

/** Refusals are badCSR, or badPublicKey for the key itself (RFC 8555 §6.7). */
const bad = (message: string): KeywardError => new KeywardError('badCSR', message);

const PEM =
  /^\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END \1CERTIFICATE REQUEST-----\s*$/;

function toDer(input: string | Uint8Array): Uint8Array {
  const size = typeof input === 'string' ? input.length : input.byteLength;
  if (size > MAX_CSR_BYTES) throw bad(`CSR is larger than ${MAX_CSR_BYTES} bytes`);
  if (typeof input !== 'string' && input[0] !== 0x2d /* '-' */) return input;
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1');
  const m = PEM.exec(text);
  if (m === null) throw bad('CSR is not a PEM "CERTIFICATE REQUEST" block');
  const b64 = m[2]!.replace(/[\r\n]/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw bad('CSR PEM has invalid base64');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

interface SignatureScheme {
  digest: string | null;
  keyKinds: ReadonlyArray<KeyType['kind']>;
  /** PKCS#1 v1.5 OIDs allow NULL parameters; the others must have none. */
  nullParamsAllowed: boolean;
}

const EC = ['ecdsa-p256', 'ecdsa-p384'] as const;

// SHA-1 is refused: it is not needed by any client we serve, and nothing should be signed with it.
const SIGNATURE_SCHEMES: Readonly<Record<string, SignatureScheme>> = {
  [OID.ecdsaWithSha256]: { digest: 'sha256', keyKinds: EC, nullParamsAllowed: false },
  [OID.ecdsaWithSha384]: { digest: 'sha384', keyKinds: EC, nullParamsAllowed: false },
  [OID.ecdsaWithSha512]: { digest: 'sha512', keyKinds: EC, nullParamsAllowed: false },
  [OID.sha256WithRsa]: { digest: 'sha256', keyKinds: ['rsa'], nullParamsAllowed: true },
  [OID.sha384WithRsa]: { digest: 'sha384', keyKinds: ['rsa'], nullParamsAllowed: true },
  [OID.sha512WithRsa]: { digest: 'sha512', keyKinds: ['rsa'], nullParamsAllowed: true },
  [OID.ed25519]: { digest: null, keyKinds: ['ed25519'], nullParamsAllowed: false },
};

const SIGNATURE_NAMES: Readonly<Record<string, string>> = {
  [OID.sha1WithRsa]: 'sha1WithRSAEncryption',
  [OID.ecdsaWithSha1]: 'ecdsa-with-SHA1',
  [OID.rsassaPss]: 'RSASSA-PSS',
};

interface CsrParts {
  info: Uint8Array;
  version: Uint8Array;
  spki: Uint8Array;
  signatureOid: string;
  signatureParams: Tlv | undefined;
  der: Uint8Array;
  signature: Uint8Array;
  commonName?: string;
  sans: SanSet;
  extensions: CsrExtension[];
}

/** The fields of a CSR as the CA reads them; structure only, nothing verified. */
export type CsrFields = Omit<CsrParts, 'info' | 'signatureParams' | 'der' | 'extensions'>;

/**
 * Reads a CSR by walking its DER (RFC 2986 §4), strictly, so that what we verify is exactly what
 * we were sent. This is the hot path of every issuance: a schema-driven parse (@peculiar/x509,
 * pkijs) costs several times more. test/ca/csr-reader.test.ts checks it against pkijs on the test
 * corpus, generated and mutated CSRs: whatever it accepts, pkijs accepts and reads the same.
 */
function split(der: Uint8Array): CsrParts {
  try {
    const root = readWhole(der, TAG.SEQUENCE);
    wellFormed(der, root, 0);
    const [info, alg, sig, ...rest] = children(der, root);
    if (rest.length > 0) throw new DerError('extra fields');
    const [version, subject, spki, attributes, ...more] = children(
      der,
      expectTag(info, TAG.SEQUENCE, 'CertificationRequestInfo'),
    );
    if (more.length > 0) throw new DerError('CertificationRequestInfo has extra fields');
    if (valueOf(der, expectTag(version, TAG.INTEGER, 'version')).some((b) => b !== 0))
      throw bad('CSR version must be 1 (0)');
    const [keyAlg, keyBits, ...keyRest] = children(der, expectTag(spki, TAG.SEQUENCE, 'subjectPKInfo'));
    const keyAlgParts = children(der, expectTag(keyAlg, TAG.SEQUENCE, 'subjectPKInfo algorithm'));
    anOid(der, keyAlgParts[0], 'key algorithm OID');
    if (keyAlgParts.length > 2 || keyRest.length > 0) throw new DerError('subjectPKInfo has extra fields');
    expectTag(keyBits, TAG.BIT_STRING, 'subjectPublicKey');
    const algParts = children(der, expectTag(alg, TAG.SEQUENCE, 'signatureAlgorithm'));
    if (algParts.length > 2) throw new DerError('signatureAlgorithm has extra fields');
    const sigBits = valueOf(der, expectTag(sig, TAG.BIT_STRING, 'signature'));
    if (sigBits.length < 2 || sigBits[0] !== 0) throw new DerError('bad signature BIT STRING');
    const commonName = readCommonName(der, expectTag(subject, TAG.SEQUENCE, 'subject'));
    const { san: sanValue, extensions } = readExtensionRequest(
      der,
      expectTag(attributes, ATTRIBUTES_TAG, 'attributes'),
    );
    const parts: CsrParts = {
      der,
      info: rawOf(der, info!),
      version: valueOf(der, version!),
      spki: rawOf(der, spki!).slice(),
      signatureOid: decodeOid(valueOf(der, expectTag(algParts[0], TAG.OID, 'signature algorithm OID'))),
      signatureParams: algParts[1],
      signature: sigBits.subarray(1),
      sans: sanValue === undefined ? { dns: [], ip: [], uri: [], email: [] } : parseSans(sanValue),
      extensions,
    };
    if (commonName !== undefined) parts.commonName = commonName;
    return parts;
  } catch (e) {
    if (e instanceof DerError) throw bad(`CSR is not valid DER: ${e.message}`);
    throw e;
  }
}

const MAX_DEPTH = 24;
/**
 * Universal tags a CSR may hold: BOOLEAN, INTEGER, BIT/OCTET STRING, NULL, OID, ENUMERATED, the
 * usual string types and SEQUENCE/SET. Not end-of-contents (0, a BER marker), reserved numbers or
 * times (a library parse fails on those that don't decode; a CSR has no use for them).
 */
const UNIVERSAL_TAGS = new Set([1, 2, 3, 4, 5, 6, 10, 12, 16, 17, 18, 19, 20, 22, 26, 30]);

/**
 * Every value in the tree decodes, including those we skip (other extensions, attributes, key
 * parameters), as in a library parse: known universal tags, OIDs with minimal arcs, BIT STRINGs with 0–7 unused bits,
 * empty NULLs, one-octet BOOLEANs, non-empty INTEGERs.
 */
function wellFormed(buf: Uint8Array, t: Tlv, depth: number): void {
  if (depth > MAX_DEPTH) throw new DerError('nested too deeply');
  if ((t.tag & 0xc0) === 0) {
    const n = t.tag & 0x1f;
    if (!UNIVERSAL_TAGS.has(n)) throw new DerError('unexpected universal tag');
    // DER: SEQUENCE and SET are constructed, everything else primitive.
    if ((n === 16 || n === 17) !== ((t.tag & 0x20) !== 0)) throw new DerError('wrong constructed bit');
  }
  if ((t.tag & 0x20) !== 0) {
    for (const child of children(buf, t)) wellFormed(buf, child, depth + 1);
    return;
  }
  const v = valueOf(buf, t);
  switch (t.tag) {
    case TAG.OID:
      decodeOid(v);
      break;
    case TAG.BIT_STRING:
      if (v.length === 0 || v[0]! > 7 || (v.length === 1 && v[0] !== 0)) throw new DerError('bad BIT STRING');
      break;
    case TAG.NULL:
      if (v.length !== 0) throw new DerError('bad NULL');
      break;
    case TAG.BOOLEAN:
      if (v.length !== 1) throw new DerError('bad BOOLEAN');
      break;
    case TAG.INTEGER:
      if (v.length === 0) throw new DerError('empty INTEGER');
      break;
    case TAG.BMP_STRING:
      if (v.length % 2 !== 0) throw new DerError('bad BMPString');
      break;
  }
}

/** `attributes [0] IMPLICIT SET OF Attribute`. */
const ATTRIBUTES_TAG = 0xa0;
const OID_CN = oid(OID.commonName);
const OID_SAN = oid(OID.subjectAltName);
const OID_EXTENSION_REQUEST = oid(OID.extensionRequest);

/** An OID, checked to decode (minimal arcs), as a library parse would. */
function anOid(buf: Uint8Array, t: Tlv | undefined, what: string): Tlv {
  decodeOid(valueOf(buf, expectTag(t, TAG.OID, what)));
  return t!;
}

const sameBytes = (buf: Uint8Array, t: Tlv, encoded: Uint8Array): boolean =>
  t.end - t.start === encoded.length && Buffer.from(encoded).equals(rawOf(buf, t));

/** DirectoryString forms a commonName may take; anything else is refused. */
function directoryString(buf: Uint8Array, t: Tlv): string {
  const v = valueOf(buf, t);
  switch (t.tag) {
    case TAG.UTF8_STRING: {
      const text = Buffer.from(v).toString('utf8');
      if (!Buffer.from(text, 'utf8').equals(v)) throw bad('CSR commonName is not valid UTF-8');
      return text;
    }
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
      return ia5(v, 'commonName');
    case TAG.BMP_STRING: {
      if (v.length % 2 !== 0) throw bad('CSR commonName is not a valid BMPString');
      return Buffer.from(v).swap16().toString('utf16le');
    }
    default:
      throw bad('CSR commonName has an unsupported string type');
  }
}

/** Name ::= SEQUENCE OF SET OF AttributeTypeAndValue; at most one commonName. */
function readCommonName(buf: Uint8Array, subject: Tlv): string | undefined {
  let cn: string | undefined;
  for (const rdn of children(buf, subject)) {
    for (const atv of children(buf, expectTag(rdn, TAG.SET, 'RelativeDistinguishedName'))) {
      const [type, value, ...extra] = children(buf, expectTag(atv, TAG.SEQUENCE, 'AttributeTypeAndValue'));
      if (value === undefined || extra.length > 0) throw new DerError('bad AttributeTypeAndValue');
      if (!sameBytes(buf, anOid(buf, type, 'attribute type'), OID_CN)) continue;
      if (cn !== undefined) throw bad('CSR subject has more than one commonName');
      cn = directoryString(buf, value);
      if (cn.length === 0) throw bad('CSR commonName is empty');
    }
  }
  return cn;
}

/**
 * The subjectAltName value from the one extensionRequest attribute (RFC 2985 §5.4.2), if any, and
 * the other extensions it asks for (each at most once, RFC 5280 §4.2).
 */
function readExtensionRequest(
  buf: Uint8Array,
  attributes: Tlv,
): { san: Uint8Array | undefined; extensions: CsrExtension[] } {
  let requests = 0;
  let san: Uint8Array | undefined;
  const others: CsrExtension[] = [];
  for (const attr of children(buf, attributes)) {
    const [type, values, ...extra] = children(buf, expectTag(attr, TAG.SEQUENCE, 'Attribute'));
    if (extra.length > 0) throw new DerError('Attribute has extra fields');
    anOid(buf, type, 'attribute type');
    const set = children(buf, expectTag(values, TAG.SET, 'attribute values'));
    if (!sameBytes(buf, type!, OID_EXTENSION_REQUEST)) continue;
    if (++requests > 1) throw bad('CSR has more than one extensionRequest attribute');
    if (set.length !== 1) throw bad('CSR extensionRequest must hold exactly one value');
    const extensions = children(buf, expectTag(set[0], TAG.SEQUENCE, 'Extensions'));
    for (const ext of extensions) {
      const fields = children(buf, expectTag(ext, TAG.SEQUENCE, 'Extension'));
      const id = anOid(buf, fields[0], 'extension id');
      let next = 1;
      let critical = false;
      if (fields[next]?.tag === TAG.BOOLEAN) {
        const flag = valueOf(buf, fields[next++]!);
        // DER: DEFAULT FALSE is never encoded, so a present flag is TRUE, 0xff.
        if (flag.length !== 1 || flag[0] !== 0xff) throw new DerError('bad critical flag');
        critical = true;
      }
      const value = expectTag(fields[next], TAG.OCTET_STRING, 'extension value');
      if (fields.length !== next + 1) throw new DerError('Extension has extra fields');
      if (!sameBytes(buf, id, OID_SAN)) {
        const dotted = decodeOid(valueOf(buf, id));
        if (others.some((e) => e.oid === dotted)) throw bad(`CSR asks for extension ${dotted} twice`);
        others.push({ oid: dotted, critical, value: valueOf(buf, value).slice() });
        continue;
      }
      if (san !== undefined) throw bad('CSR has more than one subjectAltName extension');
      san = valueOf(buf, value);
    }
  }
  return { san, extensions: others };
}

function checkKey(spki: Uint8Array): { keyType: KeyType; key: KeyObject } {
  let info: SpkiInfo;
  try {
    info = inspectSpki(spki);
  } catch (e) {
    if (e instanceof SpkiError) throw new KeywardError('badPublicKey', e.message);
    throw e;
  }
  try {
    return { keyType: info.keyType, key: publicKeyOf(spki, info) };
  } catch {
    throw new KeywardError('badPublicKey', 'public key is invalid');
  }
}

/**
 * The KeyObject of a checked SubjectPublicKeyInfo. EC and Ed25519 keys go in as JWKs built from
 * the point inspectSpki checked: OpenSSL 3's DER decoder costs about twice as much CPU per key
 * (~150 µs against ~70 µs here), once per CSR. Both ways OpenSSL refuses an EC point that is not
 * on its curve (EC_POINT_set_affine_coordinates checks it). RSA keys are decoded from the DER.
 */
function publicKeyOf(spki: Uint8Array, info: SpkiInfo): KeyObject {
  const bits = info.publicKeyBits;
  const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
  switch (info.keyType.kind) {
    case 'ecdsa-p256':
    case 'ecdsa-p384': {
      // An uncompressed point (inspectSpki): 0x04 ‖ x ‖ y.
      const size = (bits.length - 1) / 2;
      const crv = info.keyType.kind === 'ecdsa-p256' ? 'P-256' : 'P-384';
      const key = { kty: 'EC', crv, x: b64(bits.subarray(1, 1 + size)), y: b64(bits.subarray(1 + size)) };
      return createPublicKey({ key, format: 'jwk' });
    }
    case 'ed25519':
      return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64(bits) }, format: 'jwk' });
    default:
      return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  }
}

function checkSignature(parts: CsrParts, keyType: KeyType, key: KeyObject): void {
  const scheme = SIGNATURE_SCHEMES[parts.signatureOid];
  if (scheme === undefined) {
    throw bad(`unsupported CSR signature algorithm ${SIGNATURE_NAMES[parts.signatureOid] ?? parts.signatureOid}`);
  }
  const p = parts.signatureParams;
  if (p !== undefined && !(scheme.nullParamsAllowed && p.tag === TAG.NULL && p.end === p.valueStart)) {
    throw bad('CSR signature algorithm has unexpected parameters');
  }
  if (!scheme.keyKinds.includes(keyType.kind)) throw bad('CSR signature algorithm does not match its public key');
  let ok: boolean;
  try {
    ok = verify(scheme.digest, parts.info, { key, dsaEncoding: 'der' }, parts.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw bad('CSR signature is invalid');
}

function ia5(bytes: Uint8Array, what: string): string {
  for (const b of bytes) if (b < 0x20 || b > 0x7e) throw bad(`CSR ${what} contains non-ASCII or control characters`);
  return Buffer.from(bytes).toString('latin1');
}

/** GeneralNames from a SAN extension value; names we cannot certify are refused, not dropped. */
function parseSans(value: Uint8Array): SanSet {
  const sans = emptySans();
  let names: Tlv[];
  try {
    names = children(value, readWhole(value, TAG.SEQUENCE));
  } catch (e) {
    if (e instanceof DerError) throw bad(`CSR subjectAltName is malformed: ${e.message}`);
    throw e;
  }
  if (names.length === 0) throw bad('CSR subjectAltName extension is empty');
  for (const n of names) {
    const content = valueOf(value, n);
    switch (n.tag) {
      case GN_TAG.dNSName:
        sans.dns.push(ia5(content, 'dNSName'));
        break;
      case GN_TAG.iPAddress:
        if (content.length !== 4 && content.length !== 16) throw bad('CSR iPAddress must be 4 or 16 octets');
        sans.ip.push(formatIp(content));
        break;
      case GN_TAG.uniformResourceIdentifier:
        sans.uri.push(ia5(content, 'uniformResourceIdentifier'));
        break;
      case GN_TAG.rfc822Name:
        sans.email.push(ia5(content, 'rfc822Name'));
        break;
      default:
        throw bad(`CSR subjectAltName has an unsupported name type [${n.tag & 0x1f}]`);
    }
  }
  return sans;
}

/** The structure of a CSR (DER) without any check of its key or signature: for tests and tools. */
export function readCsr(der: Uint8Array): CsrFields {
  const { info: _i, signatureParams: _p, der: _d, extensions: _e, ...fields } = split(der);
  return fields;
}

/**
 * Parses a PKCS#10 CSR (PEM text, or DER) and checks what the CA relies on: strict DER, version 1,
 * a key type we certify, and a valid self-signature (proof of possession). Requested extensions
 * other than subjectAltName are returned as they are; src/issuance/extensions.ts decides them.
 */
export function parseCsr(input: string | Uint8Array): ParsedCsr {
  const der = toDer(input);
  if (der.length === 0) throw bad('CSR is empty');
  const parts = split(der);
  if (parts.version.length !== 1 || parts.version[0] !== 0) throw bad('CSR version must be 1 (0)');
  const { keyType, key } = checkKey(parts.spki);
  checkSignature(parts, keyType, key);
  const out: ParsedCsr = {
    der: der.slice(),
    subjectPublicKeyInfo: parts.spki,
    keyType: keyType.kind,
    sans: parts.sans,
    extensions: parts.extensions,
  };
  if (keyType.kind === 'rsa') out.rsaBits = keyType.bits;
  if (parts.commonName !== undefined) out.commonName = parts.commonName;
  return out;
}
