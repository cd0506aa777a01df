/** dns-01 (RFC 8555 §8.4). */
import { createHash } from 'node:crypto';

import { splitWildcard } from '../core/dns-name.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { beforeDeadline, truncate } from './deadline.ts';
import { identifierProblem } from './identifier.ts';
import { DnsLookupError, type DnsResolver } from './resolver.ts';
import { failure, type ValidationConfig, type ValidationOutcome } from './types.ts';

/**
 * Bound on CNAMEs we chase ourselves. A recursive resolver normally chases them and hands back
 * the target's TXT records; this only matters for resolvers that return the bare CNAME.
 */
const MAX_CNAME_HOPS = 8;

export function dns01Digest(keyAuthorization: string): string {
  return createHash('sha256').update(keyAuthorization, 'utf8').digest('base64url');
}

export async function checkDns01(
  id: AcmeIdentifier,
  keyAuthorization: string,
  cfg: Pick<ValidationConfig, 'timeoutMs'>,
  resolver: DnsResolver,
): Promise<ValidationOutcome> {
  if (id.type !== 'dns') return failure('malformed', 'dns-01 cannot validate IP identifiers (RFC 8738 §7)');
  const bad = identifierProblem(id, true);
  if (bad) return { ok: false, problem: bad };

  const queried = `_acme-challenge.${splitWildcard(id.value).base}`;
  const deadline = Date.now() + cfg.timeoutMs;
  const found = await beforeDeadline(findTxt(queried, resolver), deadline, () => ({
    problem: `Timeout looking up TXT for ${queried}`,
  }));
  if ('problem' in found) return failure('dns', found.problem);
  if (found.records.length === 0) return failure('unauthorized', `No TXT record found at ${queried}`);

  const expected = dns01Digest(keyAuthorization);
  // A long TXT value may arrive split into several character-strings; they form one value.
  const values = found.records.map((strings) => strings.join(''));
  if (values.includes(expected)) return { ok: true };
  const shown = values.slice(0, 3).map((v) => JSON.stringify(truncate(v, 64)));
  const more = values.length > 3 ? ` and ${values.length - 3} more` : '';
  return failure(
    'incorrectResponse',
    `Incorrect TXT record ${shown.join(', ')}${more} found at ${queried} (expected ${JSON.stringify(expected)})`,
  );
}

async function findTxt(start: string, resolver: DnsResolver): Promise<{ records: string[][] } | { problem: string }> {
  const seen = new Set<string>();
  let name = start;
  try {
    for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
      seen.add(name);
      const records = await resolver.resolveTxt(name);
      if (records.length > 0) return { records };
      const [target] = await resolver.resolveCname(name);
      if (target === undefined) return { records: [] };
      const next = target.toLowerCase().replace(/\.$/, '');
      if (seen.has(next)) return { problem: `CNAME loop at ${name} looking up TXT for ${start}` };
      name = next;
    }
    return { problem: `Too many CNAMEs looking up TXT for ${start}` };
  } catch (err) {
    if (err instanceof DnsLookupError) return { problem: err.message };
    throw err;
  }
}
