import { KeywardError } from '../core/errors.ts';
import type { SanSet } from '../core/identifiers.ts';
import { formatIp, parseIp } from '../core/ip.ts';
import type { NameConstraintsSpec } from './cert-extensions.ts';
import { children, readWhole, valueOf } from './der.ts';
import { x509 } from './x509.ts';

interface Subtrees {
  dns: string[];
  /** Address and mask bytes, as in the certificate. */
  ip: { address: Uint8Array; mask: Uint8Array }[];
}

export interface NameConstraints {
  permitted: Subtrees;
  excluded: Subtrees;
}

const DNS_NAME = 0x82;
const IP_ADDRESS = 0x87;

function subtrees(der: Uint8Array, node: ReturnType<typeof readWhole>): Subtrees {
  const out: Subtrees = { dns: [], ip: [] };
  for (const subtree of children(der, node)) {
    const base = children(der, subtree)[0];
    if (!base) continue;
    const value = valueOf(der, base);
    if (base.tag === DNS_NAME) out.dns.push(Buffer.from(value).toString('latin1').toLowerCase().replace(/^\./, ''));
    if (base.tag === IP_ADDRESS)
      out.ip.push({ address: value.subarray(0, value.length / 2), mask: value.subarray(value.length / 2) });
  }
  return out;
}

/** The issuer certificate's own name constraints, so the CA never signs what relying parties reject. */
export function nameConstraintsOf(certificate: Uint8Array): NameConstraints | undefined {
  const ext = new x509.X509Certificate(new Uint8Array(certificate)).getExtension('2.5.29.30');
  if (!ext) return undefined;
  const der = new Uint8Array(ext.value);
  const result: NameConstraints = { permitted: { dns: [], ip: [] }, excluded: { dns: [], ip: [] } };
  for (const part of children(der, readWhole(der))) {
    if (part.tag === 0xa0) result.permitted = subtrees(der, part);
    if (part.tag === 0xa1) result.excluded = subtrees(der, part);
  }
  return result;
}

/** The same constraints as settings, to write them again into a successor (rotation). */
export function nameConstraintsSpecOf(certificate: Uint8Array): NameConstraintsSpec | undefined {
  const nc = nameConstraintsOf(certificate);
  if (!nc) return undefined;
  const cidr = (n: { address: Uint8Array; mask: Uint8Array }) =>
    `${formatIp(n.address)}/${[...n.mask].reduce((bits, b) => bits + b.toString(2).replace(/0/g, '').length, 0)}`;
  return {
    permittedDns: nc.permitted.dns,
    excludedDns: nc.excluded.dns,
    permittedIp: nc.permitted.ip.map(cidr),
    excludedIp: nc.excluded.ip.map(cidr),
  };
}

const dnsWithin = (name: string, base: string) => name === base || name.endsWith(`.${base}`);

function ipWithin(address: Uint8Array, net: { address: Uint8Array; mask: Uint8Array }): boolean {
  if (address.length !== net.address.length) return false;
  return address.every((b, i) => (b & net.mask[i]!) === (net.address[i]! & net.mask[i]!));
}

/** Refuses names outside the issuer's permitted subtrees or inside its excluded ones (RFC 5280 4.2.1.10). */
export function checkNameConstraints(constraints: NameConstraints | undefined, sans: SanSet): void {
  if (!constraints) return;
  const { permitted, excluded } = constraints;
  for (const name of sans.dns) {
    const bare = name.replace(/^\*\./, '');
    if (
      excluded.dns.some((b) => dnsWithin(bare, b)) ||
      (permitted.dns.length > 0 && !permitted.dns.some((b) => dnsWithin(bare, b)))
    ) {
      throw new KeywardError('rejectedIdentifier', `"${name}" is outside the issuing CA's name constraints`);
    }
  }
  for (const ip of sans.ip) {
    const bytes = parseIp(ip);
    if (!bytes) continue;
    if (
      excluded.ip.some((n) => ipWithin(bytes, n)) ||
      (permitted.ip.length > 0 && !permitted.ip.some((n) => ipWithin(bytes, n)))
    ) {
      throw new KeywardError('rejectedIdentifier', `${ip} is outside the issuing CA's name constraints`);
    }
  }
}
