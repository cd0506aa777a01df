import type { Context } from 'hono';

import type { Db } from '../db/schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { RETRY_AFTER_SECONDS } from './orders.ts';
import { malformed, notFound, unauthorized } from './problem.ts';
import { jsonResponse } from './respond.ts';
import { type AuthzRow, authzStatus, authzView } from './views.ts';

export async function ownedAuthz(db: Db, account: AccountRow, id: string): Promise<AuthzRow> {
  const authz = await db.selectFrom('acme_authzs').selectAll().where('id', '=', id).executeTakeFirst();
  if (!authz) throw notFound('authorization');
  if (authz.account_id !== account.id) throw unauthorized('This authorization belongs to another account');
  return authz;
}

export async function authzResponse(deps: AcmeDeps, authz: AuthzRow): Promise<Response> {
  const challenges = await deps.db
    .selectFrom('acme_challenges')
    .selectAll()
    .where('authz_id', '=', authz.id)
    .orderBy('type')
    .execute();
  const now = deps.clock.now();
  const headers: Record<string, string> = {};
  if (authzStatus(authz, now) === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(authzView(deps.urls, authz, challenges, now), 200, headers);
}

/** POST-as-GET, or RFC 8555 §7.5.2 deactivation (which also invalidates the orders relying on it). */
export async function postAuthz(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  let authz = await ownedAuthz(deps.db, account, c.req.param('id')!);
  const p = req.payload;
  if (p && p.status !== undefined) {
    if (p.status !== 'deactivated') throw malformed('An authorization may only be set to "deactivated"');
    const now = deps.clock.now();
    authz = await deps.db.transaction().execute(async (trx) => {
      const row = await trx
        .updateTable('acme_authzs')
        .set({ status: 'deactivated' })
        .where('id', '=', authz.id)
        .where('status', 'in', ['pending', 'valid'])
        .where('expires', '>', now)
        .returningAll()
        .executeTakeFirst();
      if (!row) throw malformed(`The authorization is ${authzStatus(authz, now)} and cannot be deactivated`);
      await trx
        .updateTable('acme_orders')
        .set({
          status: 'invalid',
          updated_at: now,
          error: JSON.stringify({
            type: 'urn:ietf:params:acme:error:unauthorized',
            detail: 'An authorization of this order was deactivated',
            status: 403,
          }),
        })
        .where('status', 'in', ['pending', 'ready'])
        .where('id', 'in', trx.selectFrom('acme_order_authzs').select('order_id').where('authz_id', '=', authz.id))
        .execute();
      return row;
    });
  }
  return authzResponse(deps, authz);
}
