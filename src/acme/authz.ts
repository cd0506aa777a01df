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
import { jsonResponse } from './respond.ts';
import { type AuthzRow, authzStatus, authzView, type ChallengeRow } from './views.ts';

type AuthzWithChallenges = AuthzRow & { challenges: ChallengeRow[] };

const authzById = precompiled((db, id: string) =>
  db
    .selectFrom('acme_authzs as a')
    .selectAll('a')
    .select(
      sql<
        ChallengeJson[]
      >`coalesce((SELECT json_agg(c ORDER BY c.type) FROM acme_challenges c WHERE c.authz_id = a.id), '[]')`.as(
        'challenges',
      ),
    )
    .where('a.id', '=', id)
    .compile(),
);

/** The authorization and its challenges in one query (challenges as JSON, dates revived here). */
export async function ownedAuthz(db: Db, account: AccountRow, id: string): Promise<AuthzWithChallenges> {
  const [row] = await authzById(db, id);
  if (!row) throw new KeywardError('notFound', 'No such authorization');
  if (row.account_id !== account.id)
    throw new KeywardError('unauthorized', 'This authorization belongs to another account');
  return {
    ...row,
    challenges: row.challenges.map((c) => ({ ...c, validated: c.validated ? new Date(c.validated) : null })),
  };
}

type ChallengeJson = Omit<ChallengeRow, 'validated'> & { validated: string | null };

export function authzResponse(deps: AcmeDeps, authz: AuthzWithChallenges): Response {
  const now = deps.clock.now();
  const headers: Record<string, string> = {};
  if (authzStatus(authz, now) === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(authzView(deps.urls, authz, authz.challenges, now), 200, headers);
}

/** POST-as-GET, or RFC 8555 §7.5.2 deactivation (which also invalidates the orders relying on it). */
export async function postAuthz(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  let authz = await ownedAuthz(deps.db, account, c.req.param('id')!);
  deps.challenges.rememberPending(authz, authz.challenges);
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
      await trx
        .updateTable('acme_orders')
        .set(invalidatedBy('An authorization of this order was deactivated', now))
        .where('status', 'in', ['pending', 'ready'])
        .where('id', 'in', trx.selectFrom('acme_order_authzs').select('order_id').where('authz_id', '=', current.id))
        .execute();
      return row;
    });
    authz = { ...row, challenges: current.challenges };
  }
  return authzResponse(deps, authz);
}
