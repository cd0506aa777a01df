/** CAA (RFC 8659) with the ACME account and method parameters of RFC 8657. */
import { splitWildcard } from '../core/dns-name.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { identifierProblem } from './identifier.ts';
import { type CaaRecord, DnsLookupError, type DnsResolver } from './resolver.ts';
import { type ChallengeKind, failure, type ValidationOutcome } from './types.ts';

export interface CaaCheckOptions {
  /** Issuer domain names that identify this CA in CAA `issue`/`issuewild` values (directory meta.caaIdentities). */
  caIdentities: string[];
  /** The account URL the certificate is requested by, for `accounturi`. */
  accountUri: string;
  /** The method that validated the identifier, for `validationmethods`. */
  method: ChallengeKind;
  /** Whether the identifier is a wildcard name; also inferred from a leading `*.`. */
  wildcard: boolean;
}

/**
 * Property tags we understand, so a critical flag on them is harmless. Besides RFC 8659's three,
 * the registered tags that do not concern TLS server certificates (contacts, S/MIME, VMC).
 */
const KNOWN_TAGS = new Set(['issue', 'issuewild', 'iodef', 'contactemail', 'contactphone', 'issuemail', 'issuevmc']);

const LDH_LABEL = '[A-Za-z0-9](?:-*[A-Za-z0-9])*';
const ISSUER_DOMAIN = new RegExp(`^(${LDH_LABEL}(?:\\.${LDH_LABEL})*)[ \\t]*`);
const PARAMETER = new RegExp(`^(${LDH_LABEL})[ \\t]*=[ \\t]*([\\x21-\\x3a\\x3c-\\x7e]*)[ \\t]*`);
const METHOD = /^[A-Za-z0-9-]+$/;

export async function checkCaa(
  id: AcmeIdentifier,
  opts: CaaCheckOptions,
  resolver: DnsResolver,
): Promise<ValidationOutcome> {
  // CAA speaks about domain names only; RFC 8738 defines no CAA processing for IP identifiers.
  if (id.type === 'ip') return { ok: true };
  const bad = identifierProblem(id, true);
  if (bad) return { ok: false, problem: bad };
  const { base, wildcard: starred } = splitWildcard(id.value);
  const wildcard = opts.wildcard || starred;

  const found = await relevantRRset(base, resolver);
  if ('problem' in found) return failure('dns', found.problem);
  if (found.records.length === 0) return { ok: true };
  const at = found.owner;

  for (const rr of found.records) {
    // Bit 7 is the issuer-critical flag; bit 0 is honoured too because zone editors commonly
    // write "1" meaning critical, and refusing is the safe reading of an ambiguous record.
    const critical = (rr.flags & 0x80) !== 0 || (rr.flags & 0x01) !== 0;
    if (critical && !KNOWN_TAGS.has(rr.tag)) {
      return failure(
        'caa',
        `CAA record for ${at} has an unknown critical property ${JSON.stringify(rr.tag)}, which prevents issuance`,
      );
    }
  }

  const issue = found.records.filter((rr) => rr.tag === 'issue');
  const issuewild = found.records.filter((rr) => rr.tag === 'issuewild');
  // RFC 8659 §4.3: issuewild governs wildcards when present and is ignored for other names.
  const governing = wildcard && issuewild.length > 0 ? issuewild : issue;
  if (governing.length === 0) return { ok: true };
  if (governing.some((rr) => propertyAuthorizes(rr.value, opts))) return { ok: true };
  return failure(
    'caa',
    `CAA record for ${at} prevents issuance` +
      (wildcard && issuewild.length > 0 ? ' of wildcard certificates' : '') +
      ` by ${opts.caIdentities.join(', ') || 'this CA'} for account ${opts.accountUri} with ${opts.method}`,
  );
}

/**
 * RFC 8659 §3: the CAA RRset of the name or, failing that, of the nearest ancestor that has one
 * (the root excluded). All levels are asked at once; a failure only matters when it happens at a
 * level nearer than the first non-empty set, since such a set could have changed the outcome.
 */
async function relevantRRset(
  name: string,
  resolver: DnsResolver,
): Promise<{ owner: string; records: CaaRecord[] } | { problem: string }> {
  const labels = name.split('.');
  const levels = labels.map((_, i) => labels.slice(i).join('.'));
  const answers = await Promise.allSettled(levels.map((n) => resolver.resolveCaa(n)));
  for (const [i, answer] of answers.entries()) {
    const owner = levels[i]!;
    if (answer.status === 'fulfilled') {
      if (answer.value.length > 0) return { owner, records: answer.value };
      continue;
    }
    const err: unknown = answer.reason;
    // A name that does not exist has no CAA RRset; climbing on is what RFC 8659 asks.
    if (err instanceof DnsLookupError && err.kind === 'NXDOMAIN') continue;
    if (err instanceof DnsLookupError) return { problem: err.message };
    throw err;
  }
  return { owner: name, records: [] };
}

export interface IssueValue {
  /** Lower-cased issuer domain, or null for a value such as ";" that names no issuer. */
  issuer: string | null;
  /** Parameter tags lower-cased, in order, duplicates kept. */
  parameters: [string, string][];
}

/** Parses an issue/issuewild value by the RFC 8659 §4.2 ABNF; null when it does not match. */
export function parseIssueValue(value: string): IssueValue | null {
  let rest = value.replace(/^[ \t]*/, '');
  let issuer: string | null = null;
  const domain = ISSUER_DOMAIN.exec(rest);
  if (domain) {
    issuer = domain[1]!.toLowerCase();
    rest = rest.slice(domain[0].length);
  }
  const parameters: [string, string][] = [];
  if (rest === '') return { issuer, parameters };
  if (!rest.startsWith(';')) return null;
  rest = rest.slice(1).replace(/^[ \t]*/, '');
  if (rest === '') return { issuer, parameters };
  for (;;) {
    const p = PARAMETER.exec(rest);
    if (!p) return null;
    parameters.push([p[1]!.toLowerCase(), p[2]!]);
    rest = rest.slice(p[0].length);
    if (rest === '') return { issuer, parameters };
    if (!rest.startsWith(';')) return null;
    rest = rest.slice(1).replace(/^[ \t]*/, '');
  }
}

function propertyAuthorizes(value: string, opts: CaaCheckOptions): boolean {
  // RFC 8659 §4.2: a malformed value counts as one naming no issuer, i.e. it authorizes nobody.
  const parsed = parseIssueValue(value);
  if (!parsed?.issuer) return false;
  const issuer = parsed.issuer;
  if (!opts.caIdentities.some((ca) => ca.toLowerCase() === issuer)) return false;

  const param = (tag: string): string[] => parsed.parameters.filter(([t]) => t === tag).map(([, v]) => v);

  // RFC 8657 §3: the property binds to one exact account URL; several can't all be satisfied.
  const accountUris = param('accounturi');
  if (accountUris.length > 1) return false;
  if (accountUris.length === 1 && accountUris[0] !== opts.accountUri) return false;

  // RFC 8657 §4: a comma-separated list of ACME method names; anything unparseable matches nothing.
  const methodLists = param('validationmethods');
  if (methodLists.length > 1) return false;
  if (methodLists.length === 1) {
    const methods = methodLists[0]!.split(',');
    if (!methods.every((m) => METHOD.test(m))) return false;
    if (!methods.includes(opts.method)) return false;
  }
  return true;
}
