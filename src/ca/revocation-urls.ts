import type { Profile } from '../config/schema.ts';

/**
 * Where revocation information lives, in one place so that the URLs written into certificates and
 * the routes that serve them can't drift apart.
 *
 * CRL URL scheme (plain HTTP listener): `/crl/<issuer-id>.crl` is shard 0, `/crl/<issuer-id>-<n>.crl`
 * is shard n >= 1. With the default of one shard every certificate points at `<issuer-id>.crl`, the
 * name people expect; `<issuer-id>-0.crl` is deliberately not an alias, because a CRL names its own
 * URL in issuingDistributionPoint and a second name would not match it.
 */

export function crlFileName(issuerId: string, shard: number): string {
  return shard === 0 ? `${issuerId}.crl` : `${issuerId}-${shard}.crl`;
}

const CRL_FILE = /^([0-9a-f]{16})(?:-([1-9][0-9]{0,3}))?\.crl$/;

export function parseCrlFileName(name: string): { issuerId: string; shard: number } | undefined {
  const m = CRL_FILE.exec(name);
  if (!m) return undefined;
  return { issuerId: m[1]!, shard: m[2] === undefined ? 0 : Number(m[2]) };
}

export function crlUrl(baseUrl: string, issuerId: string, shard: number): string {
  return `${baseUrl}/crl/${crlFileName(issuerId, shard)}`;
}

export function ocspUrl(baseUrl: string): string {
  return `${baseUrl}/ocsp`;
}

/**
 * AIA caIssuers: the issuer certificate as DER (application/pkix-cert, RFC 5280 4.2.2.1). The
 * older `/issuer/<id>.cer` stays served for certificates issued before the path was plural.
 */
export function caIssuersUrl(baseUrl: string, issuerId: string): string {
  return `${baseUrl}/issuers/${issuerId}.cer`;
}

/**
 * The shard of a new certificate: derived from its random serial, so it is uniform and needs no
 * coordination between replicas. Stored with the certificate, never recomputed.
 */
export function shardFor(serialHex: string, shards: number): number {
  if (shards <= 1) return 0;
  return Number.parseInt(serialHex.slice(-8), 16) % shards;
}

/** Whether a certificate of this profile and requested lifetime goes without CDP/OCSP URLs. */
export function isPassiveRevocation(profile: Pick<Profile, 'passiveRevocationAtOrBelow'>, lifetimeMs: number): boolean {
  return profile.passiveRevocationAtOrBelow !== undefined && lifetimeMs <= profile.passiveRevocationAtOrBelow;
}
