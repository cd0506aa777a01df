import { createPublicKey, type KeyObject, verify } from 'node:crypto';

import { children, decodeOid, DerError, expectTag, rawOf, readWhole, TAG, type Tlv, valueOf } from './der.ts';
import { CaError } from './errors.ts';
import { GN_TAG, type SubjectAltNames } from './general-names.ts';
import { formatIp } from './ip.ts';
import { OID } from './oids.ts';
import { inspectSpki, type KeyType, SpkiError } from './spki.ts';
import { x509 } from './x509.ts';

export type CsrErrorCode = 'badCSR' | 'badPublicKey';

/** A refused CSR; `code` is the ACME error type (RFC 8555 6.7) the front end should answer with. */
export class CsrError extends CaError {
  override name = 'CsrError';
  declare readonly code: CsrErrorCode;
  constructor(code: CsrErrorCode, message: string) {
    super(code, message);
  }
}

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
  sans: SubjectAltNames;
}

const bad = (message: string): CsrError => new CsrError('badCSR', message);

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
}

/** The outer structure, read strictly so that what we verify is exactly what we were sent. */
function split(der: Uint8Array): CsrParts {
  try {
    const root = readWhole(der, TAG.SEQUENCE);
    const [info, alg, sig, ...rest] = children(der, root);
    if (rest.length > 0) throw new DerError('extra fields');
    const infoFields = children(der, expectTag(info, TAG.SEQUENCE, 'CertificationRequestInfo'));
    const version = valueOf(der, expectTag(infoFields[0], TAG.INTEGER, 'version'));
    expectTag(infoFields[1], TAG.SEQUENCE, 'subject');
    const spki = expectTag(infoFields[2], TAG.SEQUENCE, 'subjectPKInfo');
    const algParts = children(der, expectTag(alg, TAG.SEQUENCE, 'signatureAlgorithm'));
    if (algParts.length > 2) throw new DerError('signatureAlgorithm has extra fields');
    const sigBits = valueOf(der, expectTag(sig, TAG.BIT_STRING, 'signature'));
    if (sigBits.length < 2 || sigBits[0] !== 0) throw new DerError('bad signature BIT STRING');
    return {
      der,
      info: rawOf(der, info!),
      version,
      spki: rawOf(der, spki).slice(),
      signatureOid: decodeOid(valueOf(der, expectTag(algParts[0], TAG.OID, 'signature algorithm OID'))),
      signatureParams: algParts[1],
      signature: sigBits.subarray(1),
    };
  } catch (e) {
    if (e instanceof DerError) throw bad(`CSR is not valid DER: ${e.message}`);
    throw e;
  }
}

function checkKey(spki: Uint8Array): { keyType: KeyType; key: KeyObject } {
  let keyType: KeyType;
  try {
    keyType = inspectSpki(spki).keyType;
  } catch (e) {
    if (e instanceof SpkiError) throw new CsrError('badPublicKey', e.message);
    throw e;
  }
  try {
    // OpenSSL checks that an EC point lies on its curve when it decodes the key.
    return { keyType, key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }) };
  } catch {
    throw new CsrError('badPublicKey', 'public key is invalid');
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
function parseSans(value: Uint8Array): SubjectAltNames {
  const sans: SubjectAltNames = { dns: [], ip: [], uri: [], email: [] };
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

function extractNames(der: Uint8Array): { commonName?: string; sans: SubjectAltNames } {
  let cns: string[];
  let sanValues: Uint8Array[];
  try {
    const req = new x509.Pkcs10CertificateRequest(new Uint8Array(der));
    cns = req.subjectName.getField('CN');
    sanValues = req.extensions.filter((e) => e.type === OID.subjectAltName).map((e) => new Uint8Array(e.value));
    if (req.attributes.filter((a) => a.type === OID.extensionRequest).length > 1) {
      throw bad('CSR has more than one extensionRequest attribute');
    }
  } catch (e) {
    if (e instanceof CsrError) throw e;
    throw bad('CSR could not be parsed');
  }
  if (cns.length > 1) throw bad('CSR subject has more than one commonName');
  if (sanValues.length > 1) throw bad('CSR has more than one subjectAltName extension');
  const commonName = cns[0];
  if (commonName !== undefined && commonName.length === 0) throw bad('CSR commonName is empty');
  const sans = sanValues[0] === undefined ? { dns: [], ip: [], uri: [], email: [] } : parseSans(sanValues[0]);
  return commonName === undefined ? { sans } : { commonName, sans };
}

/**
 * Parses a PKCS#10 CSR (PEM text, or DER) and checks what the CA relies on: strict DER, version 1,
 * a key type we certify, and a valid self-signature (proof of possession). Requested extensions
 * other than subjectAltName are ignored; the profile decides them.
 */
export function parseCsr(input: string | Uint8Array): ParsedCsr {
  const der = toDer(input);
  if (der.length === 0) throw bad('CSR is empty');
  const parts = split(der);
  if (parts.version.length !== 1 || parts.version[0] !== 0) throw bad('CSR version must be 1 (0)');
  const { keyType, key } = checkKey(parts.spki);
  checkSignature(parts, keyType, key);
  const names = extractNames(der);
  const out: ParsedCsr = {
    der: der.slice(),
    subjectPublicKeyInfo: parts.spki,
    keyType: keyType.kind,
    sans: names.sans,
  };
  if (keyType.kind === 'rsa') out.rsaBits = keyType.bits;
  if (names.commonName !== undefined) out.commonName = names.commonName;
  return out;
}
