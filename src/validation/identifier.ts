import { isIP } from 'node:net';

import { DnsLookupError, type DnsResolver } from './resolver.ts';
import type { Identifier, ValidationProblem } from './types.ts';

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cased, without a trailing dot; DNS names compare case-insensitively. */
export function normalizeDnsName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** An LDH host name of at least two labels (a bare label would be resolved against search lists). */
export function isValidDnsName(name: string): boolean {
  const n = normalizeDnsName(name);
  if (n.length === 0 || n.length > 253) return false;
  const labels = n.split('.');
  return labels.length >= 2 && labels.every((l) => LABEL.test(l));
}

export function splitWildcard(name: string): { base: string; wildcard: boolean } {
  const n = normalizeDnsName(name);
  return n.startsWith('*.') ? { base: n.slice(2), wildcard: true } : { base: n, wildcard: false };
}

/** Checks an identifier's syntax; wildcards only where the caller allows them (dns-01, CAA). */
export function identifierProblem(id: Identifier, allowWildcard: boolean): ValidationProblem | null {
  if (id.type === 'ip') {
    return isIP(id.value) === 0
      ? { type: 'malformed', detail: `Invalid IP address identifier ${JSON.stringify(id.value)}` }
      : null;
  }
  if (id.type !== 'dns') return { type: 'malformed', detail: `Unsupported identifier type ${JSON.stringify(id.type)}` };
  const { base, wildcard } = splitWildcard(id.value);
  if (wildcard && !allowWildcard) {
    return { type: 'malformed', detail: `Wildcard identifier ${id.value} can only be validated with dns-01` };
  }
  return isValidDnsName(base)
    ? null
    : { type: 'malformed', detail: `Invalid DNS identifier ${JSON.stringify(id.value)}` };
}

/** The 4 or 16 address bytes, or null for anything that is not an IP literal. */
export function ipToBytes(ip: string): Buffer | null {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family !== 6) return null;
  // The WHATWG serialiser rewrites any IPv6 spelling (embedded dotted quads included) as hex groups.
  const canonical = new URL(`http://[${ip.replace(/%.*$/, '')}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** The reverse-mapping name tls-alpn-01 sends as SNI for an IP identifier (RFC 8738 §6). */
export function reverseDnsName(ip: string): string {
  const bytes = ipToBytes(ip);
  if (!bytes) throw new Error(`not an IP address: ${ip}`);
  if (bytes.length === 4) return `${[...bytes].reverse().join('.')}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (const b of bytes) nibbles.push((b >> 4).toString(16), (b & 15).toString(16));
  return `${nibbles.reverse().join('.')}.ip6.arpa`;
}

/** Host as it appears in a URL or Host header: IPv6 literals need brackets. */
export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/**
 * Addresses to connect to for a name, in the order to try them: the first IPv6 address, then the
 * first IPv4 address as a fallback when IPv6 fails, as Let's Encrypt does. Always asks the
 * injected resolver, never the OS (so no /etc/hosts).
 */
export async function connectAddresses(
  name: string,
  resolver: DnsResolver,
): Promise<{ addresses: string[] } | { problem: ValidationProblem }> {
  if (isIP(name) !== 0) return { addresses: [name] };
  const [v4, v6] = await Promise.allSettled([resolver.resolveA(name), resolver.resolveAAAA(name)]);
  const addresses: string[] = [];
  if (v6.status === 'fulfilled' && v6.value[0] !== undefined) addresses.push(v6.value[0]);
  if (v4.status === 'fulfilled' && v4.value[0] !== undefined) addresses.push(v4.value[0]);
  if (addresses.length > 0) return { addresses };
  const failed = [v4, v6].find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    const err: unknown = failed.reason;
    if (err instanceof DnsLookupError) return { problem: { type: 'dns', detail: err.message } };
    throw err;
  }
  return { problem: { type: 'dns', detail: `No valid IP addresses found for ${name}` } };
}
