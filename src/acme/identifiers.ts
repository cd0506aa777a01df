import { dnsNameProblem } from '../core/dns-name.ts';
import { type ErrorKind, KeywardError, refusalOf, type Subproblem } from '../core/errors.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { canonicalIp } from '../core/ip.ts';

/**
 * Why an identifier is refused, or null. Names must already be canonical (lower case, no trailing
 * dot, RFC 5952 IPs): lego compares what it sent with what we echo byte for byte, so we refuse
 * rather than rewrite.
 */
function identifierIssue(id: AcmeIdentifier): { kind: ErrorKind; detail: string } | null {
  if (id.type === 'ip') {
    const canonical = canonicalIp(id.value);
    if (canonical === null) return { kind: 'malformed', detail: `${JSON.stringify(id.value)} is not an IP address` };
    return canonical === id.value
      ? null
      : { kind: 'rejectedIdentifier', detail: `IP address ${id.value} must be written in canonical form ${canonical}` };
  }
  const v = id.value;
  if (canonicalIp(v) !== null) return { kind: 'malformed', detail: `${v} is an IP address; use identifier type "ip"` };
  if (v !== v.toLowerCase()) return { kind: 'rejectedIdentifier', detail: `DNS identifier ${v} must be lower case` };
  const problem = dnsNameProblem(v, { wildcard: true });
  return problem === undefined ? null : { kind: 'malformed', detail: problem };
}

/** The newOrder `identifiers`, checked one by one so each refusal is a subproblem (RFC 8555 §6.7.1). */
export function checkIdentifiers(value: unknown, max: number): AcmeIdentifier[] {
  if (!Array.isArray(value) || value.length === 0)
    throw new KeywardError('malformed', '"identifiers" must be a non-empty array');
  const out: AcmeIdentifier[] = [];
  const seen = new Set<string>();
  const subs: Subproblem[] = [];
  for (const raw of value) {
    if (
      typeof raw !== 'object' ||
      raw === null ||
      typeof (raw as { type?: unknown }).type !== 'string' ||
      typeof (raw as { value?: unknown }).value !== 'string'
    ) {
      throw new KeywardError('malformed', 'Each identifier must be an object with string "type" and "value"');
    }
    const { type, value: v } = raw as { type: string; value: string };
    if (type !== 'dns' && type !== 'ip') {
      subs.push({
        kind: 'unsupportedIdentifier',
        detail: `Identifier type ${JSON.stringify(type)} is not supported`,
        identifier: { type, value: v },
      });
      continue;
    }
    const id: AcmeIdentifier = { type, value: v };
    const issue = identifierIssue(id);
    if (issue) {
      subs.push({ ...issue, identifier: id });
      continue;
    }
    const key = `${type}:${v}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(id);
    }
  }
  if (subs.length > 0) throw refusalOf(subs, 'Cannot issue for these identifiers');
  if (out.length > max) throw new KeywardError('rejectedIdentifier', `An order may have at most ${max} identifiers`);
  return out;
}

/** Splits `*.example.com` into the authorization's identifier and wildcard flag (RFC 8555 §7.1.4). */
export function authzIdentifier(id: AcmeIdentifier): { type: 'dns' | 'ip'; value: string; wildcard: boolean } {
  if (id.type === 'dns' && id.value.startsWith('*.')) return { type: 'dns', value: id.value.slice(2), wildcard: true };
  return { type: id.type, value: id.value, wildcard: false };
}
