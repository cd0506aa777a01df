import { timingSafeEqual } from 'node:crypto';

import { normalizeSerial } from '../ca/serial.ts';
import { x509 } from '../ca/x509.ts';
import type { CertificateRow, Db } from '../db/schema.ts';
import { MeshError } from './errors.ts';

/**
 * Authenticates a client certificate presented over TLS. The listener accepts any certificate
 * (rejectUnauthorized false), so this is the whole check: signed by one of our issuers, currently
 * valid, recorded in our database byte for byte, and not revoked. TLS itself has already proven
 * possession of the private key (CertificateVerify).
 */
export async function authenticatePeer(db: Db, leafDer: Uint8Array | undefined, now: Date): Promise<CertificateRow> {
  if (!leafDer || leafDer.length === 0)
    throw new MeshError('unauthorized', 401, 'renewal needs the current certificate as a TLS client certificate');
  let leaf: x509.X509Certificate;
  try {
    leaf = new x509.X509Certificate(new Uint8Array(leafDer));
  } catch {
    throw new MeshError('unauthorized', 401, 'the client certificate cannot be parsed');
  }
  const issuers = await db.selectFrom('issuers').selectAll().where('kind', '=', 'intermediate').execute();
  let issuerId: string | undefined;
  for (const row of issuers) {
    const issuer = new x509.X509Certificate(new Uint8Array(row.certificate));
    if (issuer.subject !== leaf.issuer) continue;
    if (await leaf.verify({ publicKey: issuer.publicKey, signatureOnly: true }).catch(() => false)) {
      issuerId = row.id;
      break;
    }
  }
  if (!issuerId) throw new MeshError('unauthorized', 401, 'the client certificate was not issued by this CA');
  if (leaf.notAfter.getTime() <= now.getTime())
    throw new MeshError(
      'unauthorized',
      401,
      `the client certificate expired at ${leaf.notAfter.toISOString()}; an expired certificate cannot renew (use a new bootstrap token)`,
    );
  if (leaf.notBefore.getTime() > now.getTime())
    throw new MeshError('unauthorized', 401, 'the client certificate is not valid yet');
  const row = await db
    .selectFrom('certificates')
    .selectAll()
    .where('serial', '=', normalizeSerial(leaf.serialNumber))
    .where('issuer_id', '=', issuerId)
    .executeTakeFirst();
  const same =
    row !== undefined &&
    row.der.length === leafDer.length &&
    timingSafeEqual(Buffer.from(row.der), Buffer.from(leafDer));
  if (!row || !same) throw new MeshError('unauthorized', 401, "the client certificate is not in this CA's records");
  if (row.status === 'revoked' || row.revoked_at)
    throw new MeshError(
      'unauthorized',
      401,
      `the client certificate (serial ${row.serial}) is revoked and cannot renew`,
    );
  return row;
}
