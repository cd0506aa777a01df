import { isDnsName } from '../core/dns-name.ts';
import type { SanSet } from '../core/identifiers.ts';
import { parseIp } from '../core/ip.ts';
import { tlv } from './der.ts';

/** GeneralName context tags (IMPLICIT, primitive). */
export const GN_TAG = { rfc822Name: 0x81, dNSName: 0x82, uniformResourceIdentifier: 0x86, iPAddress: 0x87 } as const;

/** A name we refuse to put in a certificate. */
export class NameError extends Error {
  override readonly name = 'NameError';
}

// RFC 3986 scheme, then visible ASCII.
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/;
const EMAIL = /^[\x21-\x3f\x41-\x7e]+@[A-Za-z0-9_.-]+$/;

function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function encodeDnsName(name: string): Uint8Array {
  // Single labels are allowed here: name constraints may name a whole internal zone (`internal`).
  if (!isDnsName(name, { wildcard: true, singleLabel: true }))
    throw new NameError(`invalid DNS name ${JSON.stringify(name)}`);
  return tlv(GN_TAG.dNSName, ascii(name));
}

export function encodeIpAddress(text: string): Uint8Array {
  const bytes = parseIp(text);
  if (bytes === null) throw new NameError(`invalid IP address ${JSON.stringify(text)}`);
  return tlv(GN_TAG.iPAddress, bytes);
}

export function encodeUri(uri: string): Uint8Array {
  if (uri.length > 2048 || !URI.test(uri)) throw new NameError(`invalid URI ${JSON.stringify(uri)}`);
  return tlv(GN_TAG.uniformResourceIdentifier, ascii(uri));
}

export function encodeEmail(email: string): Uint8Array {
  if (email.length > 254 || !EMAIL.test(email)) throw new NameError(`invalid email address ${JSON.stringify(email)}`);
  return tlv(GN_TAG.rfc822Name, ascii(email));
}

/** GeneralName encodings in a fixed order: DNS, IP, URI, email. */
export function encodeGeneralNames(s: SanSet): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const n of s.dns) out.push(encodeDnsName(n));
  for (const n of s.ip) out.push(encodeIpAddress(n));
  for (const n of s.uri) out.push(encodeUri(n));
  for (const n of s.email) out.push(encodeEmail(n));
  return out;
}
