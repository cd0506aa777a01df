import { BlockList, isIP } from 'node:net';

import { isDnsName } from '../core/dns-name.ts';
import { KeywardError } from '../core/errors.ts';
import type { PolicyKind } from '../db/schema.ts';

/** A malformed rule pattern (refused when the rule is added, so evaluation never sees one). */
export class PatternError extends KeywardError {
  override name = 'PatternError';
  constructor(detail: string) {
    super('malformed', detail);
  }
}

export interface RulePattern {
  kind: PolicyKind;
  /** Canonical text: what is stored and shown. */
  pattern: string;
}

const KIND_PREFIX = /^(dns|ip|uri|email):(?!\/\/)/;

/** A pattern may name a whole zone by a single label (`*.internal`). */
function dnsBase(name: string): boolean {
  return isDnsName(name, { singleLabel: true });
}

/**
 * Pattern syntax (an optional `dns:`, `ip:`, `uri:` or `email:` prefix forces the kind):
 *   dns    `payments.internal` (exactly that name) or `*.svc.cluster.local` (any name below it, any depth)
 *   ip     `10.0.0.0/8`, `fd00::/8` or a single address
 *   uri    `spiffe://prod.example/ns/*\/sa/*`: `*` is one path segment (never `.` or `..`), `**` anything
 *   email  `@example.com` (any mailbox there), `@*.example.com` (any subdomain), `ops@example.com`
 * Without a prefix: `://` means uri, `@` means email, an address or CIDR means ip, else dns.
 */
export function parsePattern(text: string): RulePattern {
  let raw = text.trim();
  let kind: PolicyKind | undefined;
  const m = KIND_PREFIX.exec(raw);
  if (m) {
    kind = m[1] as PolicyKind;
    raw = raw.slice(m[0].length);
  }
  kind ??= raw.includes('://')
    ? 'uri'
    : raw.includes('@')
      ? 'email'
      : isCidr(raw) || /^[0-9a-f.:]*[.:][0-9a-f.:]*\/\d+$/i.test(raw)
        ? 'ip'
        : 'dns';
  switch (kind) {
    case 'dns': {
      const name = raw.toLowerCase().replace(/\.$/, '');
      const base = name.startsWith('*.') ? name.slice(2) : name;
      if (!dnsBase(base)) throw new PatternError(`"${text}" is not a DNS name or *.suffix pattern`);
      return { kind, pattern: name };
    }
    case 'ip': {
      if (!isCidr(raw)) throw new PatternError(`"${text}" is not an IP address or CIDR`);
      return {
        kind,
        pattern: raw.includes('/') ? raw.toLowerCase() : `${raw.toLowerCase()}/${isIP(raw) === 4 ? 32 : 128}`,
      };
    }
    case 'uri': {
      if (!/^[a-z][a-z0-9+.-]*:\/\/[^\s]+$/i.test(raw))
        throw new PatternError(`"${text}" is not an absolute URI pattern (scheme://...)`);
      return { kind, pattern: raw };
    }
    case 'email': {
      const at = raw.lastIndexOf('@');
      const local = raw.slice(0, at);
      const domain = raw.slice(at + 1).toLowerCase();
      const base = domain.startsWith('*.') ? domain.slice(2) : domain;
      if (at < 0 || /[\s@]/.test(local) || !dnsBase(base) || (local !== '' && domain.startsWith('*.'))) {
        throw new PatternError(`"${text}" is not an email pattern (@domain, @*.domain or user@domain)`);
      }
      return { kind, pattern: `${local}@${domain}` };
    }
  }
}

function isCidr(text: string): boolean {
  const [addr, prefix, ...rest] = text.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

function dnsMatches(pattern: string, value: string): boolean {
  if (pattern.startsWith('*.')) return value.endsWith(pattern.slice(1));
  return value === pattern;
}

const uriRegexes = new Map<string, RegExp>();
function uriRegex(pattern: string): RegExp {
  let re = uriRegexes.get(pattern);
  if (!re) {
    const body = pattern
      .split(/(\*\*|\*)/)
      .map((part) =>
        part === '**' ? '.+' : part === '*' ? '(?!\\.\\.?(?:/|$))[^/?#]+' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'),
      )
      .join('');
    re = new RegExp(`^${body}$`);
    if (uriRegexes.size > 1000) uriRegexes.clear();
    uriRegexes.set(pattern, re);
  }
  return re;
}

/** Does `pattern` (canonical, of `kind`) cover the identifier value? */
export function matches(kind: PolicyKind, pattern: string, value: string): boolean {
  switch (kind) {
    case 'dns':
      return dnsMatches(pattern, value.toLowerCase().replace(/\.$/, ''));
    case 'ip': {
      const family = isIP(value);
      if (family === 0) return false;
      const [addr, prefix] = pattern.split('/') as [string, string];
      const pFamily = isIP(addr);
      if (pFamily !== family) return false;
      const list = new BlockList();
      list.addSubnet(addr, Number(prefix), family === 4 ? 'ipv4' : 'ipv6');
      return list.check(value, family === 4 ? 'ipv4' : 'ipv6');
    }
    case 'uri':
      return uriRegex(pattern).test(value);
    case 'email': {
      const at = value.lastIndexOf('@');
      if (at <= 0) return false;
      const local = value.slice(0, at);
      const domain = value.slice(at + 1).toLowerCase();
      const pAt = pattern.lastIndexOf('@');
      const pLocal = pattern.slice(0, pAt);
      if (pLocal !== '' && pLocal !== local) return false;
      return dnsMatches(pattern.slice(pAt + 1), domain);
    }
  }
}

/**
 * For deny rules: does the requested value cover any name the pattern names? A requested
 * wildcard `*.svc.x` would cover a denied `secret.svc.x`, so the deny must reach it.
 */
export function overlaps(kind: PolicyKind, pattern: string, value: string): boolean {
  if (matches(kind, pattern, value)) return true;
  if (kind !== 'dns' || !value.startsWith('*.')) return false;
  const base = value.slice(2).toLowerCase();
  const named = pattern.startsWith('*.') ? pattern.slice(2) : pattern;
  // The wildcard covers exactly one label below its base.
  return !pattern.startsWith('*.')
    ? named.endsWith(`.${base}`) && !named.slice(0, -base.length - 1).includes('.')
    : false;
}
