import { isIPv4, isIPv6 } from 'node:net';

/**
 * The one IP-address rule: IP addresses as certificates carry them (iPAddress: 4 or 16 octets) and
 * back to one canonical text form (dotted quad; RFC 5952 for IPv6), so that names from a CSR, an
 * ACME order, a token and a policy rule compare equal. Literals only: no zone, no prefix.
 */

function parseV4(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

function parseV6(text: string): Uint8Array {
  const out = new Uint8Array(16);
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    tail4 = parseV4(text.slice(lastColon + 1));
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const groups = (s: string | undefined): number[] =>
    s === undefined || s === '' ? [] : s.split(':').map((g) => parseInt(g, 16));
  const l = groups(left);
  const r = groups(right);
  const words = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  for (let i = 0; i < 8; i++) {
    const w = words[i] ?? 0;
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  }
  if (tail4 !== null) out.set(tail4, 12);
  return out;
}

/** Octets for an IPv4/IPv6 literal (no zone, no prefix), or null when it is not one. */
export function parseIp(text: string): Uint8Array | null {
  if (isIPv4(text)) return parseV4(text);
  if (isIPv6(text) && !text.includes('%')) return parseV6(text);
  return null;
}

/** Dotted quad, or RFC 5952 text for 16 octets. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new Error(`an IP address has 4 or 16 octets, not ${bytes.length}`);
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  // RFC 5952 4.2: compress the longest run of two or more zero groups (the first such run on a tie).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical text of an IP literal, or null when it is not one. */
export function canonicalIp(text: string): string | null {
  const bytes = parseIp(text);
  return bytes === null ? null : formatIp(bytes);
}

/** 4 or 6 for an IP literal (without zone), else 0. */
export function ipFamily(text: string): 0 | 4 | 6 {
  return isIPv4(text) ? 4 : isIPv6(text) && !text.includes('%') ? 6 : 0;
}
