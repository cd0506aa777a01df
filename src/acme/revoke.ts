import { createHash, createPublicKey, type JsonWebKey } from 'node:crypto';

import type { Context } from 'hono';

import { x509 } from '../ca/x509.ts';
import { KeywardError } from '../core/errors.ts';
import { normalizeSerial } from '../core/serial.ts';
import type { CertificateRow } from '../db/schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { decodeB64url } from './ids.ts';
import { verifyRequest } from './jws.ts';
import { emptyResponse } from './respond.ts';

function serialOf(der: Buffer): string {
  try {
    return normalizeSerial(new x509.X509Certificate(new Uint8Array(der)).serialNumber);
  } catch {
    throw new KeywardError('malformed', '"certificate" is not a DER X.509 certificate');
  }
}

/** An account may revoke a certificate it did not order if it holds live authorizations for every name in it. */
async function authorizedForAllNames(deps: AcmeDeps, account: AccountRow, cert: CertificateRow): Promise<boolean> {
  const now = deps.clock.now();
  const names = [
    ...cert.sans.dns.map((n) =>
      n.startsWith('*.')
        ? { type: 'dns' as const, value: n.slice(2), wildcard: true }
        : { type: 'dns' as const, value: n, wildcard: false },
    ),
    ...cert.sans.ip.map((n) => ({ type: 'ip' as const, value: n, wildcard: false })),
  ];
  if (names.length === 0) return false;
  const valid = await deps.db
    .selectFrom('acme_authzs')
    .select(['identifier_type', 'identifier_value', 'wildcard'])
    .where('account_id', '=', account.id)
    .where('status', '=', 'valid')
    .where('expires', '>', now)
    .execute();
  const have = new Set(valid.map((a) => `${a.identifier_type}:${a.wildcard ? '*.' : ''}${a.identifier_value}`));
  return names.every((n) => have.has(`${n.type}:${n.wildcard ? '*.' : ''}${n.value}`));
}

/**
 * RFC 8555 §7.6. Three kinds of requester may revoke: the ordering account, an account authorized
 * for all the names, or anyone holding the certificate's key (a jwk-signed request).
 */
export async function revokeCert(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'either');
  const p = req.payload;
  if (!p || typeof p.certificate !== 'string')
    throw new KeywardError('malformed', 'revokeCert needs {"certificate": <base64url DER>}');
  const der = decodeB64url(p.certificate);
  if (!der || der.length === 0) throw new KeywardError('malformed', '"certificate" must be unpadded base64url DER');
  let reason = 0;
  if (p.reason !== undefined) {
    if (typeof p.reason !== 'number' || !Number.isInteger(p.reason))
      throw new KeywardError('badRevocationReason', '"reason" must be an integer reason code');
    reason = p.reason;
  }
  const serial = serialOf(der);
  const row = await deps.db.selectFrom('certificates').selectAll().where('serial', '=', serial).executeTakeFirst();
  if (!row || !Buffer.from(row.der).equals(der))
    throw new KeywardError('notFound', 'This CA did not issue that certificate');

  let requester: string;
  if (req.account) {
    const mine = row.requester === `acme:${req.account.id}`;
    if (!mine && !(await authorizedForAllNames(deps, req.account, row))) {
      throw new KeywardError(
        'unauthorized',
        'The account neither ordered this certificate nor holds authorizations for all its names',
      );
    }
    requester = `acme:${req.account.id}`;
  } else {
    const spki = createPublicKey({ key: req.jwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    if (!createHash('sha256').update(spki).digest().equals(Buffer.from(row.spki_sha256))) {
      throw new KeywardError('unauthorized', 'The JWS is not signed by the key of this certificate');
    }
    requester = 'acme:certificate-key';
  }
  await deps.certificates.revoke(serial, reason, requester);
  return emptyResponse(200);
}
