import { X509Certificate } from 'node:crypto';

import type { Db } from '../db/schema.ts';

export interface SpiffeBundle {
  keys: Array<Record<string, unknown>>;
  spiffe_refresh_hint: number;
  spiffe_sequence: number;
}

/**
 * The SPIFFE trust bundle (JWKS form, SPIFFE Trust Domain and Bundle spec §4): one X.509 authority
 * per root, `use: "x509-svid"`, the certificate in `x5c`. The sequence is the creation time (Unix
 * seconds) of the newest root, so it grows whenever a root is added, on every replica alike.
 */
export async function spiffeBundle(db: Db, refreshHintMs: number): Promise<SpiffeBundle> {
  const roots = await db
    .selectFrom('issuers')
    .select(['certificate', 'created_at'])
    .where('kind', '=', 'root')
    // Both roots during a rollover; a retired root is no longer trusted.
    .where('state', '!=', 'retired')
    .orderBy('created_at')
    .execute();
  const keys = roots.map((r) => {
    const cert = new X509Certificate(Buffer.from(r.certificate));
    const jwk = cert.publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
    return { ...jwk, use: 'x509-svid', x5c: [Buffer.from(r.certificate).toString('base64')] };
  });
  const newest = roots.reduce((max, r) => Math.max(max, Math.floor(r.created_at.getTime() / 1000)), 0);
  return { keys, spiffe_refresh_hint: Math.max(1, Math.round(refreshHintMs / 1000)), spiffe_sequence: newest };
}
