import { createHash } from 'node:crypto';

import type { CrossCertificateRow, Executor, IssuerRow } from '../db/schema.ts';
import type { Signer } from '../kms/index.ts';
import { buildCrossCertificate, buildSubordinateCa } from './ca-builder.ts';
import { nameConstraintsSpecOf } from './name-constraints.ts';
import { randomSerial } from './serial.ts';
import { x509 } from './x509.ts';

const BACKDATE_MS = 60_000;

/**
 * Roots made by Keyward allow two CA certificates below them, so that a root trusting client
 * validates root → cross-certified root → intermediate → leaf (OpenSSL applies a trust anchor's
 * own path length too).
 */
export const ROOT_PATH_LENGTH = 2;

export function subjectNameOf(der: Uint8Array): { commonName: string; organization?: string } {
  const name = new x509.X509Certificate(new Uint8Array(der)).subjectName;
  const organization = name.getField('O')[0];
  return { commonName: name.getField('CN')[0] ?? 'Keyward CA', ...(organization ? { organization } : {}) };
}

/**
 * `signerRow` certifies `subject`'s name and key. For a root that is a root cross-certificate
 * (path length 1: an intermediate below it); for an intermediate, the same intermediate under a
 * second root (path length 0, its name constraints kept), which validates even under a root whose
 * own path length allows a single CA below it.
 */
export async function crossCertify(
  trx: Executor,
  subject: IssuerRow,
  signerRow: IssuerRow,
  signer: Signer,
  now: Date,
): Promise<CrossCertificateRow> {
  const notAfter = new Date(Math.min(subject.not_after.getTime(), signerRow.not_after.getTime()));
  const spec = {
    serial: Buffer.from(randomSerial(), 'hex'),
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    subject: subjectNameOf(subject.certificate),
    subjectPublicKeyInfo: new Uint8Array(
      new x509.X509Certificate(new Uint8Array(subject.certificate)).publicKey.rawData,
    ),
  };
  const issuer = { certificate: signerRow.certificate, signer };
  const der =
    subject.kind === 'root'
      ? await buildCrossCertificate({ ...spec, pathLength: 1 }, issuer)
      : await buildSubordinateCa(
          { ...spec, pathLength: 0, nameConstraints: nameConstraintsSpecOf(subject.certificate) },
          issuer,
        );
  return trx
    .insertInto('issuer_cross_certificates')
    .values({
      id: createHash('sha256').update(der).digest('hex').slice(0, 16),
      subject_issuer_id: subject.id,
      signer_issuer_id: signerRow.id,
      certificate: der,
      not_after: notAfter,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}
