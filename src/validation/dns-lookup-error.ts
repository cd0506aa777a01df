export type DnsFailureKind = 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED' | 'TIMEOUT' | 'ERROR';

/** A look-up that produced no usable answer. An empty answer (NODATA) is not an error. */
export class DnsLookupError extends Error {
  override readonly name = 'DnsLookupError';
  constructor(
    readonly kind: DnsFailureKind,
    readonly rrtype: string,
    readonly query: string,
    /** The resolver's own code when `kind` is `ERROR` (e.g. `ECONNREFUSED`, `EBADRESP`). */
    readonly code?: string,
  ) {
    super(`${describeKind(kind, code)} looking up ${rrtype} for ${query}`);
  }
}

/** RCODE names read as DNS people know them; the other two are not RCODEs, so they are spelled out. */
function describeKind(kind: DnsFailureKind, code: string | undefined): string {
  if (kind === 'TIMEOUT') return 'Timeout';
  if (kind === 'ERROR') return `DNS error${code ? ` (${code})` : ''}`;
  return kind;
}

export interface CaaRecord {
  /** The flags octet; bit 7 (128) is the issuer-critical flag. */
  flags: number;
  /** Lower-cased: property tags match case-insensitively (RFC 8659 §4.1). */
  tag: string;
  value: string;
}
