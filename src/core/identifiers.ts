/** What a certificate can name: the subjectAltName types Keyward certifies (RFC 5280 §4.2.1.6). */
export type IdentifierType = 'dns' | 'ip' | 'uri' | 'email';

export interface Identifier<T extends IdentifierType = IdentifierType> {
  type: T;
  value: string;
}

/** The identifiers ACME orders and validates (RFC 8555 §9.7.7, RFC 8738). */
export type AcmeIdentifier = Identifier<'dns' | 'ip'>;

/** Names by type, as certificates carry them: DNS names lower case, IPs in canonical text form. */
export interface SanSet {
  dns: string[];
  ip: string[];
  uri: string[];
  email: string[];
}

export const SAN_TYPES: readonly IdentifierType[] = ['dns', 'ip', 'uri', 'email'];

export function emptySans(): SanSet {
  return { dns: [], ip: [], uri: [], email: [] };
}

export function sanCount(s: SanSet): number {
  return s.dns.length + s.ip.length + s.uri.length + s.email.length;
}

export function identifiersOf(sans: SanSet): Identifier[] {
  return SAN_TYPES.flatMap((type) => sans[type].map((value) => ({ type, value })));
}

export function sansOf(identifiers: readonly Identifier[]): SanSet {
  const sans = emptySans();
  for (const id of identifiers) sans[id.type].push(id.value);
  return sans;
}

/** `type:value`, for sets and messages. */
export function identifierKey(id: Identifier): string {
  return `${id.type}:${id.value}`;
}
