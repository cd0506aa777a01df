import { isIP } from 'node:net';

import { dnsNameProblem, normalizeDnsName, splitWildcard } from '../core/dns-name.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { canonicalIp, parseIp } from '../core/ip.ts';
import { DnsLookupError, type DnsResolver } from './resolver.ts';
import type { ValidationProblem } from './types.ts';

/** Checks an identifier's syntax; wildcards only where the caller allows them (dns-01, CAA). */
export function identifierProblem(id: AcmeIdentifier, allowWildcard: boolean): ValidationProblem | null {
  if (id.type === 'ip') {
    return canonicalIp(id.value) === null
      ? { type: 'malformed', detail: `Invalid IP address identifier ${JSON.stringify(id.value)}` }
      : null;
  }
  if (id.type !== 'dns') return { type: 'malformed', detail: `Unsupported identifier type ${JSON.stringify(id.type)}` };
  const name = normalizeDnsName(id.value);
  if (splitWildcard(name).wildcard && !allowWildcard) {
    return { type: 'malformed', detail: `Wildcard identifier ${id.value} can only be validated with dns-01` };
  }
  const problem = dnsNameProblem(name, { wildcard: true });
  return problem === undefined ? null : { type: 'malformed', detail: `Invalid DNS identifier: ${problem}` };
}

/** The reverse-mapping name tls-alpn-01 sends as SNI for an IP identifier (RFC 8738 §6). */
export function reverseDnsName(ip: string): string {
  const bytes = parseIp(ip);
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
