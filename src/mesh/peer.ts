import { timingSafeEqual } from 'node:crypto';

import { x509 } from '../ca/x509.ts';
import { KeywardError } from '../core/errors.ts';
import { normalizeSerial } from '../core/serial.ts';
import type { CertificateRow, Db } from '../db/schema.ts';

/**
 * Authenticates a client certificate presented over TLS. The listener accepts any certificate
 * (rejectUnauthorized false), so this is the whole check: signed by one of our issuers, currently
 * valid, recorded in our database byte for byte, and not revoked. TLS itself has already proven
 * possession of the private key (CertificateVerify).
 */
export async function authenticatePeer(db: Db, leafDer: Uint8Array | undefined, now: Date): Promise<CertificateRow> {
  if (!leafDer || leafDer.length === 0)
    throw new KeywardError('unauthenticated', 'renewal needs the current certificate as a TLS client certificate');
  let leaf: x509.X509Certificate;
  try {
    leaf = new x509.X509Certificate(new Uint8Array(leafDer));
  } catch {
    throw new KeywardError('unauthenticated', 'the client certificate cannot be parsed');
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
  if (!issuerId) throw new KeywardError('unauthenticated', 'the client certificate was not issued by this CA');
  if (leaf.notAfter.getTime() <= now.getTime())
    throw new KeywardError(
      'unauthenticated',
      `the client certificate expired at ${leaf.notAfter.toISOString()}; an expired certificate cannot renew (use a new bootstrap token)`,
    );
  if (leaf.notBefore.getTime() > now.getTime())
    throw new KeywardError('unauthenticated', 'the client certificate is not valid yet');
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
  if (!row || !same) throw new KeywardError('unauthenticated', "the client certificate is not in this CA's records");
  if (row.status === 'revoked' || row.revoked_at)
    throw new KeywardError(
      'unauthenticated',
      `the client certificate (serial ${row.serial}) is revoked and cannot renew`,
    );
  return row;
}
