import { domainToASCII, domainToUnicode } from 'node:url';

/**
 * The one DNS-name rule, for everything Keyward certifies, validates or matches against policy:
 * - host names as RFC 1123 §2.1 and RFC 1035 §2.3.4 define them: letters, digits and hyphens,
 *   labels of 1–63 octets that neither start nor end with a hyphen, at most 253 octets in all;
 * - lower case and without a trailing dot (callers that accept other spellings normalise first);
 * - internationalised names only as A-labels (RFC 5890 §2.3.2.1): an `xn--` label must decode to
 *   a U-label of letters, marks and digits (RFC 5892) that encodes back to it, and other labels with hyphens in positions 3 and 4 are
 *   reserved (RFC 5891 §4.2.3.1);
 * - the last label is not all digits (RFC 3696 §2), so `a.123` and dotted quads are not names;
 * - at least two labels unless the caller allows a single label: a bare label is resolved
 *   against search lists, so what it names depends on the resolver (ACME refuses it);
 * - a wildcard only as the whole leftmost label, over at least two labels, where allowed.
 */
export interface DnsNameRules {
  wildcard?: boolean;
  singleLabel?: boolean;
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower case without one trailing dot: DNS names compare case-insensitively (RFC 4343). */
export function normalizeDnsName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

// RFC 5892 leaves letters, marks and digits (and the hyphen) valid in a U-label; symbols such as
// emoji and punctuation are DISALLOWED even though UTS #46 processing would map them through.
const U_LABEL = /^[\p{L}\p{M}\p{Nd}-]+$/u;

function validALabel(label: string): boolean {
  const unicode = domainToUnicode(label);
  return unicode !== '' && unicode !== label && U_LABEL.test(unicode) && domainToASCII(unicode) === label;
}

/** Why `name` is not an acceptable DNS name under the rules, or undefined when it is. */
export function dnsNameProblem(name: string, rules: DnsNameRules = {}): string | undefined {
  const shown = JSON.stringify(name);
  if (name.length === 0) return 'a DNS name must not be empty';
  if (name !== name.toLowerCase()) return `DNS name ${shown} must be lower case`;
  if (name.endsWith('.')) return `DNS name ${shown} must not end with a dot`;
  const wildcard = name.startsWith('*.');
  if (wildcard && !rules.wildcard) return `DNS name ${shown} is a wildcard, which is not allowed here`;
  const base = wildcard ? name.slice(2) : name;
  if (base.includes('*')) return `DNS name ${shown}: a wildcard may only be the whole leftmost label`;
  if (name.length > 253) return `DNS name ${shown} is longer than 253 characters`;
  const labels = base.split('.');
  for (const label of labels) {
    if (label.length === 0) return `DNS name ${shown} has an empty label`;
    if (label.length > 63) return `DNS name ${shown} has a label longer than 63 characters`;
    if (!LABEL.test(label))
      return `DNS name ${shown} has a label with characters other than letters, digits and inner hyphens`;
    if (label.slice(2, 4) === '--' && !(label.startsWith('xn--') && validALabel(label)))
      return `DNS name ${shown} has a label "${label}" that is not a valid IDNA A-label`;
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return `DNS name ${shown} ends in an all-numeric label`;
  if (labels.length < 2 && (wildcard || !rules.singleLabel))
    return `DNS name ${shown} needs at least two labels${wildcard ? ' below the wildcard' : ''}`;
  return undefined;
}

export function isDnsName(name: string, rules: DnsNameRules = {}): boolean {
  return dnsNameProblem(name, rules) === undefined;
}

/** `*.example.com` → base `example.com`, wildcard true. */
export function splitWildcard(name: string): { base: string; wildcard: boolean } {
  return name.startsWith('*.') ? { base: name.slice(2), wildcard: true } : { base: name, wildcard: false };
}
