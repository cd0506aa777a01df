import { dnsNameProblem, type DnsNameRules, normalizeDnsName } from '../core/dns-name.ts';
import { KeywardError } from '../core/errors.ts';
import type { SanSet } from '../core/identifiers.ts';
import { canonicalIp } from '../core/ip.ts';

const URI = /^[a-z][a-z0-9+.-]*:[\x21-\x7e]+$/i;
const EMAIL = /^[^@\s]+@[^@\s]+$/;

/**
 * The names as a certificate will carry them: DNS names lower case without a trailing dot, IPs in
 * canonical form, duplicates dropped. Refuses (rejectedIdentifier) anything that is not a valid
 * name of its type, before anything is reserved or signed. Wildcards are allowed; single-label DNS
 * names only where `rules` say so.
 */
export function normalizeSans(sans: SanSet, rules: DnsNameRules = {}): SanSet {
  const refuse = (detail: string) => new KeywardError('rejectedIdentifier', detail);
  const dns = [...new Set(sans.dns.map(normalizeDnsName))];
  for (const name of dns) {
    const problem = dnsNameProblem(name, { wildcard: true, ...rules });
    if (problem !== undefined) throw refuse(problem);
  }
  const ip = [
    ...new Set(
      sans.ip.map((addr) => {
        const canonical = canonicalIp(addr);
        if (canonical === null) throw refuse(`"${addr}" is not an IP address`);
        return canonical;
      }),
    ),
  ];
  const uri = [...new Set(sans.uri)];
  for (const u of uri) if (!URI.test(u) || !URL.canParse(u)) throw refuse(`"${u}" is not an absolute URI`);
  const email = [...new Set(sans.email)];
  for (const e of email) if (!EMAIL.test(e)) throw refuse(`"${e}" is not an email address`);
  return { dns, ip, uri, email };
}
