import { createHash } from 'node:crypto';

import type { IssuerRow } from '../db/schema.ts';

/**
 * Roots a relying party should trust now: every one not retired, oldest first. During a rollover
 * that is the old root (retiring) and the new one; /roots.pem, the SPIFFE bundle and the ACME
 * directory's `meta.roots` all list this set.
 */
export function trustedRoots(rows: readonly IssuerRow[]): IssuerRow[] {
  return rows.filter((i) => i.kind === 'root' && i.state !== 'retired');
}

/** SHA-256 of a certificate's DER as `keyward serve` prints it (upper-case hex pairs joined by colons). */
export function sha256Fingerprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}
