import { createHash } from 'node:crypto';

import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { derToRaw } from '../kms/ecdsa-signature.ts';
import type { KeyHierarchy } from '../kms/index.ts';

export const PROVISIONER = 'default';

export interface Provisioner {
  keyId: string;
  kid: string;
  publicJwk: Record<string, string>;
}

/** RFC 7638 thumbprint: a stable key id that anyone holding the public key can recompute. */
function thumbprint(jwk: Record<string, string>): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

/** The provisioner's public half (for verifying tokens); undefined before the first token. */
export async function findProvisioner(db: Db): Promise<Provisioner | undefined> {
  const row = await db.selectFrom('mesh_provisioners').selectAll().where('name', '=', PROVISIONER).executeTakeFirst();
  return row ? { keyId: row.key_id, kid: row.kid, publicJwk: row.public_jwk } : undefined;
}

/**
 * The token-signing key, created on first use: an ECDSA P-256 key wrapped by the key hierarchy.
 * An advisory lock keeps two replicas (or two CLI runs) from creating two.
 */
export async function ensureProvisioner(db: Db, kms: KeyHierarchy, principal: string): Promise<Provisioner> {
  const found = await findProvisioner(db);
  if (found) return found;
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext('keyward:mesh-provisioner'))`.execute(trx);
    const again = await trx
      .selectFrom('mesh_provisioners')
      .selectAll()
      .where('name', '=', PROVISIONER)
      .executeTakeFirst();
    if (again) return { keyId: again.key_id, kid: again.kid, publicJwk: again.public_jwk };
    const key = await kms.createKey(trx, { usage: 'provisioner', alg: 'ecdsa-p256', principal });
    const jwk = key.publicKey.export({ format: 'jwk' }) as Record<string, string>;
    const publicJwk = { kty: jwk.kty!, crv: jwk.crv!, x: jwk.x!, y: jwk.y! };
    const kid = thumbprint(publicJwk);
    await trx
      .insertInto('mesh_provisioners')
      .values({ name: PROVISIONER, key_id: key.id, kid, public_jwk: JSON.stringify(publicJwk) })
      .execute();
    return { keyId: key.id, kid, publicJwk };
  });
}

/** A compact JWS (ES256) over the claims, signed through the audited key hierarchy. */
export async function signJwt(
  kms: KeyHierarchy,
  provisioner: Provisioner,
  claims: Record<string, unknown>,
  principal: string,
): Promise<string> {
  const header = { alg: 'ES256', typ: 'JWT', kid: provisioner.kid };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signer = await kms.signer(provisioner.keyId, 'sign-token', principal);
  const der = await signer.sign(new TextEncoder().encode(input), { jti: String(claims.jti ?? '') });
  return `${input}.${Buffer.from(derToRaw(der, 32)).toString('base64url')}`;
}

function b64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}
