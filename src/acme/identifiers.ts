import { isIP } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';

import { formatIp, parseIp } from '../ca/ip.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import { isValidDnsName } from '../validation/identifier.ts';
import { type AcmeErrorType, AcmeProblem, malformed, type Subproblem } from './problem.ts';

function validIdnaLabels(name: string): boolean {
  return name
    .split('.')
    .every(
      (label) =>
        !label.startsWith('xn--') || (domainToUnicode(label) !== '' && domainToASCII(domainToUnicode(label)) === label),
    );
}

/**
 * Why an identifier is refused, or null. Names must already be canonical (lower case, no trailing
 * dot, RFC 5952 IPs): lego compares what it sent with what we echo byte for byte (interop 64, P14),
 * so we refuse rather than rewrite.
 */
function identifierIssue(id: AcmeIdentifierJson): { type: AcmeErrorType; detail: string } | null {
  if (id.type === 'ip') {
    const bytes = isIP(id.value) ? parseIp(id.value) : null;
    if (!bytes) return { type: 'malformed', detail: `${JSON.stringify(id.value)} is not an IP address` };
    const canonical = formatIp(bytes);
    return canonical === id.value
      ? null
      : { type: 'rejectedIdentifier', detail: `IP address ${id.value} must be written in canonical form ${canonical}` };
  }
  const v = id.value;
  if (isIP(v)) return { type: 'malformed', detail: `${v} is an IP address; use identifier type "ip"` };
  if (v !== v.toLowerCase()) return { type: 'rejectedIdentifier', detail: `DNS identifier ${v} must be lower case` };
  if (v.endsWith('.')) return { type: 'malformed', detail: `DNS identifier ${v} must not end with a dot` };
  const base = v.startsWith('*.') ? v.slice(2) : v;
  if (base.includes('*'))
    return { type: 'malformed', detail: `DNS identifier ${v}: a wildcard may only be the whole leftmost label` };
  if (!isValidDnsName(base)) return { type: 'malformed', detail: `${JSON.stringify(v)} is not a valid DNS name` };
  if (!validIdnaLabels(base))
    return { type: 'malformed', detail: `DNS identifier ${v} has an invalid IDNA (xn--) label` };
  return null;
}

export function throwSubproblems(subs: Subproblem[], summary: string): never {
  const types = new Set(subs.map((s) => s.type));
  const p = new AcmeProblem(
    types.size === 1 ? subs[0]!.type : 'compound',
    `${summary}: ${subs.map((s) => s.detail).join('; ')}`,
  );
  p.subproblems = subs;
  throw p;
}

/** The newOrder `identifiers`, checked one by one so each refusal is a subproblem (RFC 8555 §6.7.1). */
export function checkIdentifiers(value: unknown, max: number): AcmeIdentifierJson[] {
  if (!Array.isArray(value) || value.length === 0) throw malformed('"identifiers" must be a non-empty array');
  const out: AcmeIdentifierJson[] = [];
  const seen = new Set<string>();
  const subs: Subproblem[] = [];
  for (const raw of value) {
    if (
      typeof raw !== 'object' ||
      raw === null ||
      typeof (raw as { type?: unknown }).type !== 'string' ||
      typeof (raw as { value?: unknown }).value !== 'string'
    ) {
      throw malformed('Each identifier must be an object with string "type" and "value"');
    }
    const { type, value: v } = raw as { type: string; value: string };
    if (type !== 'dns' && type !== 'ip') {
      subs.push({
        type: 'unsupportedIdentifier',
        detail: `Identifier type ${JSON.stringify(type)} is not supported`,
        identifier: { type, value: v },
      });
      continue;
    }
    const id: AcmeIdentifierJson = { type, value: v };
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
  if (subs.length > 0) throwSubproblems(subs, 'Cannot issue for these identifiers');
  if (out.length > max) throw new AcmeProblem('rejectedIdentifier', `An order may have at most ${max} identifiers`);
  return out;
}

/** Splits `*.example.com` into the authorization's identifier and wildcard flag (RFC 8555 §7.1.4). */
export function authzIdentifier(id: AcmeIdentifierJson): { type: 'dns' | 'ip'; value: string; wildcard: boolean } {
  if (id.type === 'dns' && id.value.startsWith('*.')) return { type: 'dns', value: id.value.slice(2), wildcard: true };
  return { type: id.type, value: id.value, wildcard: false };
}
