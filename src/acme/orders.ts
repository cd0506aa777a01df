import type { Context } from 'hono';

import type { Profile } from '../config/schema.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import type { Db, Executor } from '../db/schema.ts';
import { challengeKindsFor } from '../validation/index.ts';
import type { AccountRow } from './account-store.ts';
import { addMs } from './clock.ts';
import { type AcmeDeps, offeredProfiles } from './deps.ts';
import { authzIdentifier, checkIdentifiers } from './identifiers.ts';
import { randomId } from './ids.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { enforceNamePolicy, throwIfLimited } from './limits.ts';
import { AcmeProblem, malformed, notFound, unauthorized } from './problem.ts';
import { checkReplaces } from './replaces.ts';
import { jsonResponse } from './respond.ts';
import { type OrderRow, orderStatus, orderView } from './views.ts';

/** Seconds a client should wait before polling a resource that is still changing. */
export const RETRY_AFTER_SECONDS = '1';

export async function orderAuthzIds(db: Executor, orderId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('acme_order_authzs')
    .select('authz_id')
    .where('order_id', '=', orderId)
    .orderBy('position')
    .execute();
  return rows.map((r) => r.authz_id);
}

function owned<T extends { account_id: string }>(order: T | undefined, account: AccountRow): T {
  if (!order) throw notFound('order');
  if (order.account_id !== account.id) throw unauthorized('This order belongs to another account');
  return order;
}

export async function ownedOrder(db: Db, account: AccountRow, id: string): Promise<OrderRow> {
  return owned(await db.selectFrom('acme_orders').selectAll().where('id', '=', id).executeTakeFirst(), account);
}

/** For finalize: the order with when its oldest authorization was validated (for the CAA re-check). */
export async function ownedOrderToFinalize(
  db: Db,
  account: AccountRow,
  id: string,
): Promise<OrderRow & { oldest_validation: Date | null }> {
  const order = await db
    .selectFrom('acme_orders as o')
    .selectAll('o')
    .select((eb) =>
      eb
        .selectFrom('acme_order_authzs as oa')
        .innerJoin('acme_authzs as a', 'a.id', 'oa.authz_id')
        .select((e) => e.fn.min('a.validated_at').as('v'))
        .whereRef('oa.order_id', '=', 'o.id')
        .as('oldest_validation'),
    )
    .where('o.id', '=', id)
    .executeTakeFirst();
  return owned(order, account);
}

export async function orderResponse(
  deps: AcmeDeps,
  order: OrderRow,
  status = 200,
  extra: Record<string, string> = {},
  authzIds?: string[],
): Promise<Response> {
  const now = deps.clock.now();
  const headers: Record<string, string> = { ...extra };
  const s = orderStatus(order, now);
  if (s === 'processing' || s === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(
    orderView(deps.urls, order, authzIds ?? (await orderAuthzIds(deps.db, order.id)), now),
    status,
    headers,
  );
}

export function resolveProfile(deps: AcmeDeps, requested: unknown): Profile {
  const name = requested === undefined ? deps.ctx.config.acme.defaultProfile : requested;
  if (typeof name !== 'string') throw malformed('"profile" must be a string');
  const profile = offeredProfiles(deps).find((p) => p.name === name);
  if (!profile) {
    throw new AcmeProblem(
      'invalidProfile',
      `Profile ${JSON.stringify(name)} is not offered (one of: ${offeredProfiles(deps)
        .map((p) => p.name)
        .join(', ')})`,
    );
  }
  return profile;
}

function parseTime(value: unknown, field: string): Date {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value)) {
    throw malformed(`"${field}" must be an RFC 3339 timestamp`);
  }
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw malformed(`"${field}" must be an RFC 3339 timestamp`);
  return d;
}

/** The pending authorization plus one challenge per type the identifier allows. */
async function createAuthz(
  trx: Executor,
  deps: AcmeDeps,
  account: AccountRow,
  id: AcmeIdentifierJson,
  now: Date,
): Promise<string> {
  const { type, value, wildcard } = authzIdentifier(id);
  const authzId = randomId();
  await trx
    .insertInto('acme_authzs')
    .values({
      id: authzId,
      account_id: account.id,
      identifier_type: type,
      identifier_value: value,
      wildcard,
      status: 'pending',
      expires: addMs(now, deps.ctx.config.acme.authorizationLifetime),
      validated_at: null,
      created_at: now,
    })
    .execute();
  await trx
    .insertInto('acme_challenges')
    .values(
      challengeKindsFor(id).map((kind) => ({
        id: randomId(),
        authz_id: authzId,
        type: kind,
        token: randomId(24),
        status: 'pending' as const,
        error: null,
        validated: null,
      })),
    )
    .execute();
  return authzId;
}

/** A valid authorization of this account for the identifier, recent enough to reuse. */
async function reusableAuthz(
  trx: Executor,
  deps: AcmeDeps,
  account: AccountRow,
  id: AcmeIdentifierJson,
  now: Date,
): Promise<string | undefined> {
  const reuse = deps.ctx.config.acme.authorizationReuse;
  if (reuse <= 0) return undefined;
  const { type, value, wildcard } = authzIdentifier(id);
  const row = await trx
    .selectFrom('acme_authzs')
    .select('id')
    .where('account_id', '=', account.id)
    .where('identifier_type', '=', type)
    .where('identifier_value', '=', value)
    .where('wildcard', '=', wildcard)
    .where('status', '=', 'valid')
    .where('validated_at', '>=', addMs(now, -reuse))
    .where('expires', '>', now)
    .orderBy('expires', 'desc')
    .limit(1)
    .executeTakeFirst();
  return row?.id;
}

/** RFC 8555 §7.4 newOrder (with `profile` from the profiles draft and `replaces` from RFC 9773). */
export async function newOrder(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  const p = req.payload;
  if (!p) throw malformed('newOrder needs a JSON object payload');
  const acme = deps.ctx.config.acme;
  const identifiers = checkIdentifiers(p.identifiers, acme.maxIdentifiersPerOrder);
  const profile = resolveProfile(deps, p.profile);
  for (const id of identifiers) {
    if (!profile.sanTypes.includes(id.type)) {
      throw new AcmeProblem(
        'rejectedIdentifier',
        `Profile ${profile.name} does not certify ${id.type} identifiers such as ${id.value}`,
      );
    }
  }
  if (identifiers.length > profile.maxNames)
    throw new AcmeProblem('rejectedIdentifier', `Profile ${profile.name} allows at most ${profile.maxNames} names`);
  await enforceNamePolicy(deps, account, identifiers);
  const now = deps.clock.now();
  // The CA back-dates notBefore itself, so a requested notBefore could not be honoured exactly.
  if (p.notBefore !== undefined) throw malformed('"notBefore" is not supported; certificates are valid from issuance');
  let notAfter: Date | null = null;
  if (p.notAfter !== undefined) {
    notAfter = parseTime(p.notAfter, 'notAfter');
    if (notAfter <= now) throw malformed('"notAfter" must be in the future');
    if (notAfter.getTime() - now.getTime() > profile.maxLifetime) {
      throw malformed(
        `"notAfter" is beyond the longest lifetime of profile ${profile.name} (${Math.floor(profile.maxLifetime / 1000)} s)`,
      );
    }
  }
  let replaces: string | null = null;
  if (p.replaces !== undefined) replaces = await checkReplaces(deps, account, identifiers, p.replaces);

  const orderId = randomId();
  const { order, authzIds } = await deps.db.transaction().execute(async (trx) => {
    // Counted in the order's transaction: one commit for both, and a refusal rolls back nothing.
    throwIfLimited(
      await deps.limits.consume(trx, 'newOrdersPerAccount', account.id, now),
      'New orders for this account',
    );
    const authzIds: string[] = [];
    let allValid = true;
    for (const id of identifiers) {
      const reused = await reusableAuthz(trx, deps, account, id, now);
      if (reused === undefined) allValid = false;
      authzIds.push(reused ?? (await createAuthz(trx, deps, account, id, now)));
    }
    const row = await trx
      .insertInto('acme_orders')
      .values({
        id: orderId,
        account_id: account.id,
        status: allValid ? 'ready' : 'pending',
        expires: addMs(now, acme.orderLifetime),
        identifiers: JSON.stringify(identifiers),
        not_before: null,
        not_after: notAfter,
        profile: profile.name,
        replaces,
        error: null,
        certificate_serial: null,
        created_at: now,
        updated_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await trx
      .insertInto('acme_order_authzs')
      .values(authzIds.map((authz_id, position) => ({ order_id: orderId, authz_id, position })))
      .execute();
    return { order: row, authzIds };
  });
  return orderResponse(deps, order, 201, { Location: deps.urls.order(order.id) }, authzIds);
}

export async function getOrder(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const order = await ownedOrder(deps.db, requireAccount(req), c.req.param('id')!);
  return orderResponse(deps, order, 200, { Location: deps.urls.order(order.id) });
}
