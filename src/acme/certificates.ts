import type { Context } from 'hono';

import { KeywardError } from '../core/errors.ts';
import type { AcmeDeps } from './deps.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { rawResponse } from './respond.ts';

/**
 * RFC 8555 §7.4.2: POST-as-GET by the ordering account; leaf first, then the intermediate, LF line
 * endings and a trailing newline, under exactly `application/pem-certificate-chain`.
 */
export async function getCertificate(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  const serial = c.req.param('serial')!;
  const row = await deps.db
    .selectFrom('acme_orders as o')
    .innerJoin('certificates as c', 'c.serial', 'o.certificate_serial')
    .select(['o.account_id', 'c.der', 'c.issuer_id'])
    .where('o.certificate_serial', '=', serial)
    .executeTakeFirst();
  if (!row) throw new KeywardError('notFound', 'No such certificate');
  if (row.account_id !== account.id)
    throw new KeywardError('unauthorized', 'This certificate belongs to another account');
  return rawResponse(await deps.ctx.ca.chainFor(row), 'application/pem-certificate-chain');
}
