import { isIP } from 'node:net';

import type { SanSet } from '../db/schema.ts';
import { CaError } from './errors.ts';

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export function isDnsName(name: string, allowWildcard = true): boolean {
  if (name.length === 0 || name.length > 253 || name !== name.toLowerCase()) return false;
  const labels = name.split('.');
  // A single label (`keyward`, a compose or Kubernetes service name) is a name on a private
  // network; all digits would read as an IPv4 number to inet_aton.
  if (labels.length === 1 && /^\d+$/.test(name)) return false;
  return labels.every(
    (label, i) => (allowWildcard && i === 0 && label === '*' && labels.length > 2) || LABEL.test(label),
  );
}

/** Refuses syntactically bad names before anything is signed; lower-cases DNS names. */
export function normalizeSans(sans: SanSet): SanSet {
  const dns = [...new Set(sans.dns.map((n) => n.toLowerCase().replace(/\.$/, '')))];
  for (const name of dns)
    if (!isDnsName(name)) throw new CaError('rejectedIdentifier', `"${name}" is not a valid DNS name`);
  const ip = [...new Set(sans.ip)];
  for (const addr of ip)
    if (isIP(addr) === 0) throw new CaError('rejectedIdentifier', `"${addr}" is not an IP address`);
  const uri = [...new Set(sans.uri)];
  for (const u of uri) {
    if (!URL.canParse(u) || !/^[a-z][a-z0-9+.-]*:/i.test(u))
      throw new CaError('rejectedIdentifier', `"${u}" is not an absolute URI`);
  }
  const email = [...new Set(sans.email)];
  for (const e of email)
    if (!/^[^@\s]+@[^@\s]+$/.test(e)) throw new CaError('rejectedIdentifier', `"${e}" is not an email address`);
  return { dns, ip, uri, email };
}
