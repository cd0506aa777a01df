import type { Context } from 'hono';
import { sql } from 'kysely';

import { KeywardError } from '../core/errors.ts';
import { precompiled } from '../db/precompiled.ts';
import type { Db } from '../db/schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { invalidatedBy } from './order-store.ts';
import { RETRY_AFTER_SECONDS } from './orders.ts';
import { owned } from './owned.ts';
import { jsonResponse } from './respond.ts';
import { type AuthzRow, authzStatus, authzView } from './views.ts';

const authzById = precompiled((db, id: string) =>
  db.selectFrom('acme_authzs').selectAll().where('id', '=', id).compile(),
);

/** The authorization, with its challenges in the same row. */
export async function ownedAuthz(db: Db, account: AccountRow, id: string): Promise<AuthzRow> {
  const [row] = await authzById(db, id);
  return owned(row, account, 'authorization');
}

export function authzResponse(deps: AcmeDeps, authz: AuthzRow): Response {
  const now = deps.clock.now();
  const headers: Record<string, string> = {};
  if (authzStatus(authz, now) === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(authzView(deps.urls, authz, now), 200, headers);
}

/** POST-as-GET, or RFC 8555 §7.5.2 deactivation (which also invalidates the orders relying on it). */
export async function postAuthz(c: Context, deps: AcmeDeps): Promise<Response> {
  // Read with the nonce's spend: a POST-as-GET is one statement.
  const req = await verifyRequest(c, deps, 'kid', { authzId: c.req.param('id')! });
  const account = requireAccount(req);
  let authz = owned(req.authz, account, 'authorization');
  const p = req.payload;
  if (p && p.status !== undefined) {
    if (p.status !== 'deactivated')
      throw new KeywardError('malformed', 'An authorization may only be set to "deactivated"');
    const now = deps.clock.now();
    const current = authz;
    const row = await deps.db.transaction().execute(async (trx) => {
      const row = await trx
        .updateTable('acme_authzs')
        .set({ status: 'deactivated' })
        .where('id', '=', current.id)
        .where('status', 'in', ['pending', 'valid'])
        .where('expires', '>', now)
        .returningAll()
        .executeTakeFirst();
      if (!row)
        throw new KeywardError(
          'malformed',
          `The authorization is ${authzStatus(current, now)} and cannot be deactivated`,
        );
      // The orders using it are the account's, made while it was live (a range of the account's index).
      await trx
        .updateTable('acme_orders')
        .set(invalidatedBy('An authorization of this order was deactivated', now))
        .where('account_id', '=', current.account_id)
        .where('created_at', '>=', current.created_at)
        .where('status', 'in', ['pending', 'ready'])
        .where(sql<boolean>`${current.id} = ANY (authz_ids)`)
        .execute();
      return row;
    });
    authz = row;
  }
  return authzResponse(deps, authz);
}
