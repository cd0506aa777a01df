import * as asn1js from 'asn1js';

/**
 * Minimal DER writing and reading for the certificate hot path. Writing builds each TLV with one
 * allocation; reading is strict DER (definite, minimal lengths; single-byte tags only) because
 * everything we read here is either our own output or a structure we must not accept loosely.
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

export class DerError extends Error {
  override readonly name = 'DerError';
}

function lengthOfLength(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x100) return 2;
  if (n < 0x10000) return 3;
  if (n < 0x1000000) return 4;
  return 5;
}

function writeLength(out: Uint8Array, pos: number, n: number): number {
  if (n < 0x80) {
    out[pos] = n;
    return pos + 1;
  }
  const bytes = lengthOfLength(n) - 1;
  out[pos++] = 0x80 | bytes;
  for (let i = bytes - 1; i >= 0; i--) out[pos++] = (n >>> (8 * i)) & 0xff;
  return pos;
}

/** One TLV from a tag and the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(1 + lengthOfLength(len) + len);
  out[0] = tag;
  let pos = writeLength(out, 1, len);
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Uint8Array => tlv(TAG.SEQUENCE, ...parts);
export const octetString = (bytes: Uint8Array): Uint8Array => tlv(TAG.OCTET_STRING, bytes);
export const DER_TRUE = Uint8Array.of(TAG.BOOLEAN, 1, 0xff);
export const DER_NULL = Uint8Array.of(TAG.NULL, 0);

/** BIT STRING with zero unused bits (signatures, key bits). */
export function bitString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG.BIT_STRING, Uint8Array.of(0), bytes);
}

/**
 * INTEGER content for a non-negative number given as unsigned big-endian bytes: leading zero octets
 * dropped, one 0x00 prepended when the top bit is set, so the value the caller holds is the value
 * the certificate carries.
 */
export function unsignedIntegerContent(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const trimmed = bytes.subarray(i);
  if (trimmed.length === 0) return Uint8Array.of(0);
  if ((trimmed[0]! & 0x80) === 0) return trimmed;
  const out = new Uint8Array(trimmed.length + 1);
  out.set(trimmed, 1);
  return out;
}

export function smallInteger(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new DerError(`cannot encode integer ${n}`);
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return tlv(TAG.INTEGER, unsignedIntegerContent(Uint8Array.from(bytes)));
}

const oidCache = new Map<string, Uint8Array>();

/** DER OBJECT IDENTIFIER (encoded once through asn1js, then cached). */
export function oid(dotted: string): Uint8Array {
  let der = oidCache.get(dotted);
  if (der === undefined) {
    if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) throw new DerError(`bad OID ${dotted}`);
    der = new Uint8Array(new asn1js.ObjectIdentifier({ value: dotted }).toBER(false));
    oidCache.set(dotted, der);
  }
  return der;
}

/** Dotted form of an OID's content octets. */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new DerError('empty OID');
  const arcs: Array<number | bigint> = [];
  // Plain numbers on the hot path; BigInt only for arcs past 2^53 (UUID-based OIDs under 2.25).
  let acc = 0;
  let big: bigint | null = null;
  let started = false;
  for (let i = 0; i < content.length; i++) {
    const b = content[i]!;
    if (!started && b === 0x80) throw new DerError('non-minimal OID arc');
    started = true;
    if (big === null && acc >= 2 ** 45) big = BigInt(acc);
    if (big !== null) big = (big << 7n) | BigInt(b & 0x7f);
    else acc = acc * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(big ?? acc);
      acc = 0;
      big = null;
      started = false;
    } else if (i === content.length - 1) {
      throw new DerError('truncated OID');
    }
  }
  const first = arcs[0]!;
  const head =
    typeof first === 'bigint'
      ? ['2', String(first - 80n)]
      : first < 40
        ? [0, first]
        : first < 80
          ? [1, first - 40]
          : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function encodeTime(date: Date): Uint8Array {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new DerError('invalid date');
  const y = date.getUTCFullYear();
  if (y < 1950 || y > 9999) throw new DerError(`year ${y} out of range`);
  const rest =
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    'Z';
  const utc = y < 2050;
  const text = (utc ? pad2(y % 100) : String(y)) + rest;
  const out = new Uint8Array(2 + text.length);
  out[0] = utc ? TAG.UTC_TIME : TAG.GENERALIZED_TIME;
  out[1] = text.length;
  for (let i = 0; i < text.length; i++) out[2 + i] = text.charCodeAt(i);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface Tlv {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly start: number;
  /** Offset of the first content byte. */
  readonly valueStart: number;
  /** Offset just past the content. */
  readonly end: number;
}

export function readTlv(buf: Uint8Array, pos: number, limit: number = buf.length): Tlv {
  if (pos + 2 > limit) throw new DerError('truncated TLV');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not supported');
  let p = pos + 1;
  const first = buf[p++]!;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new DerError('indefinite length');
    if (n > 4) throw new DerError('length too large');
    if (p + n > limit) throw new DerError('truncated length');
    if (buf[p] === 0) throw new DerError('non-minimal length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
    if (len < 0x80) throw new DerError('non-minimal length');
  }
  const end = p + len;
  if (end > limit) throw new DerError('truncated value');
  return { tag, start: pos, valueStart: p, end };
}

/** The single TLV that must span all of `buf`. */
export function readWhole(buf: Uint8Array, expectedTag?: number): Tlv {
  const t = readTlv(buf, 0);
  if (t.end !== buf.length) throw new DerError('trailing data after DER value');
  if (expectedTag !== undefined && t.tag !== expectedTag) throw new DerError('unexpected tag');
  return t;
}

export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  if ((parent.tag & 0x20) === 0) throw new DerError('not a constructed value');
  const out: Tlv[] = [];
  let pos = parent.valueStart;
  while (pos < parent.end) {
    const t = readTlv(buf, pos, parent.end);
    out.push(t);
    pos = t.end;
  }
  return out;
}

export const valueOf = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.valueStart, t.end);
export const rawOf = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.start, t.end);

export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw new DerError(`expected ${what}`);
  return t;
}

/** UTCTime / GeneralizedTime in the restricted RFC 5280 form (YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ). */
export function decodeTime(buf: Uint8Array, t: Tlv): Date {
  const text = new TextDecoder('ascii').decode(valueOf(buf, t));
  const m =
    t.tag === TAG.UTC_TIME
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
      : t.tag === TAG.GENERALIZED_TIME
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
        : null;
  if (m === null) throw new DerError('bad time');
  let year = Number(m[1]);
  if (t.tag === TAG.UTC_TIME) year += year < 50 ? 2000 : 1900;
  const ms = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  return new Date(ms);
}
