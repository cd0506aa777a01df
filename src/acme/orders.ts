import type { Context } from 'hono';
import { sql } from 'kysely';

import type { Profile } from '../config/schema.ts';
import { addMs } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import { precompiled } from '../db/precompiled.ts';
import type { Db } from '../db/schema.ts';
import { parseReplaces } from '../issuance/index.ts';
import type { AttachedWrites } from '../kms/index.ts';
import type { AccountRow } from './account-store.ts';
import { type AcmeDeps, offeredProfiles } from './deps.ts';
import { checkIdentifiers } from './identifiers.ts';
import { randomId } from './ids.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { throwIfLimited } from './limits.ts';
import { insertOrder } from './order-store.ts';
import { owned } from './owned.ts';
import { replacedCertificate } from './replaces.ts';
import { acmeRequester } from './requester.ts';
import { jsonResponse } from './respond.ts';
import { type OrderRow, orderStatus, orderView } from './views.ts';

/** Seconds a client should wait before polling a resource that is still changing. */
export const RETRY_AFTER_SECONDS = '1';

const orderById = precompiled((db, id: string) =>
  db.selectFrom('acme_orders').selectAll().where('id', '=', id).compile(),
);

export async function ownedOrder(db: Db, account: AccountRow, id: string): Promise<OrderRow> {
  const [order] = await orderById(db, id);
  return owned(order, account, 'order');
}

/** Finalize's claim on an order: ready → processing, by the account that owns it, before it expires. */
export interface OrderClaim {
  orderId: string;
  accountId: string;
  now: Date;
}

/**
 * Finalize's claim, written by the statement that reserves the serial and audits the key use
 * (IssueRequest.reserveWith): the order turns processing with its reservation or not at all.
 * Vetoed when the order is no longer the account's ready, live order, and for every claim on an
 * order but the first in a batch: of concurrent finalizes exactly one gets to sign. The veto
 * locks the orders it passes, so nothing changes them before the claim, later in the statement.
 */
export const orderClaims: AttachedWrites<OrderClaim, [string[], string[], string[]]> = {
  name: 'order_claim',
  parameters: (items) => [
    items.map((i) => i.orderId),
    items.map((i) => i.accountId),
    items.map((i) => i.now.toISOString()),
  ],
  vetoes: (orderId, accountId, now) => sql`
    SELECT (r.n - 1)::int AS i
    FROM unnest(${orderId}::text[], ${accountId}::text[], ${now}::timestamptz[]) WITH ORDINALITY
      AS r (order_id, account_id, now, n)
    WHERE r.n > (SELECT min(f.n) FROM unnest(${orderId}::text[]) WITH ORDINALITY AS f (order_id, n)
        WHERE f.order_id = r.order_id)
      OR NOT EXISTS (
        SELECT 1 FROM acme_orders o WHERE o.id = r.order_id AND o.account_id = r.account_id
          AND o.status = 'ready' AND o.expires > r.now FOR UPDATE)`,
  writes: (appended, orderId, _accountId, now) => sql`
    UPDATE acme_orders o SET status = 'processing', updated_at = r.now
    FROM unnest(${orderId}::text[], ${now}::timestamptz[]) AS r (order_id, now)
    WHERE o.id = r.order_id AND o.status = 'ready' AND ${appended}`,
};

export function orderResponse(
  deps: AcmeDeps,
  order: OrderRow,
  status = 200,
  extra: Record<string, string> = {},
): Response {
  const now = deps.clock.now();
  const headers: Record<string, string> = { ...extra };
  const s = orderStatus(order, now);
  if (s === 'processing' || s === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(orderView(deps.urls, order, now), status, headers);
}

export function resolveProfile(deps: AcmeDeps, requested: unknown): Profile {
  const name = requested === undefined ? deps.config.acme.defaultProfile : requested;
  if (typeof name !== 'string') throw new KeywardError('malformed', '"profile" must be a string');
  const profile = offeredProfiles(deps).find((p) => p.name === name);
  if (!profile) {
    throw new KeywardError(
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
    throw new KeywardError('malformed', `"${field}" must be an RFC 3339 timestamp`);
  }
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new KeywardError('malformed', `"${field}" must be an RFC 3339 timestamp`);
  return d;
}

/** RFC 8555 §7.4 newOrder (with `profile` from the profiles draft and `replaces` from RFC 9773). */
export async function newOrder(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  const p = req.payload;
  if (!p) throw new KeywardError('malformed', 'newOrder needs a JSON object payload');
  const acme = deps.config.acme;
  const identifiers = checkIdentifiers(p.identifiers, acme.maxIdentifiersPerOrder);
  const profile = resolveProfile(deps, p.profile);
  for (const id of identifiers) {
    if (!profile.sanTypes.includes(id.type)) {
      throw new KeywardError(
        'rejectedIdentifier',
        `Profile ${profile.name} does not certify ${id.type} identifiers such as ${id.value}`,
      );
    }
  }
  if (identifiers.length > profile.maxNames)
    throw new KeywardError('rejectedIdentifier', `Profile ${profile.name} allows at most ${profile.maxNames} names`);
  // Decided here, where a refusal is cheapest, and again at finalize (src/issuance/decide.ts).
  const requester = acmeRequester(deps.urls, account);
  await deps.issuance.checkNames(requester, identifiers, profile.name);
  const now = deps.clock.now();
  // The CA back-dates notBefore itself, so a requested notBefore could not be honoured exactly.
  if (p.notBefore !== undefined)
    throw new KeywardError('malformed', '"notBefore" is not supported; certificates are valid from issuance');
  let notAfter: Date | null = null;
  if (p.notAfter !== undefined) {
    notAfter = parseTime(p.notAfter, 'notAfter');
    if (notAfter <= now) throw new KeywardError('malformed', '"notAfter" must be in the future');
    if (notAfter.getTime() - now.getTime() > profile.maxLifetime) {
      throw new KeywardError(
        'malformed',
        `"notAfter" is beyond the longest lifetime of profile ${profile.name} (${Math.floor(profile.maxLifetime / 1000)} s)`,
      );
    }
  }
  let replaces: string | null = null;
  if (p.replaces !== undefined) {
    const named = parseReplaces(p.replaces);
    deps.issuance.checkReplaces(requester, identifiers, named, await replacedCertificate(deps, named));
    replaces = named.text;
  }

  const reuse = acme.authorizationReuse;
  // Planned once per connection there: its custom plans look cheaper, so it was planned every call.
  const created = await insertOrder(deps.genericPlans, {
    id: randomId(),
    accountId: account.id,
    identifiers,
    profile: profile.name,
    notAfter,
    replaces,
    now,
    expires: addMs(now, acme.orderLifetime),
    authzExpires: addMs(now, acme.authorizationLifetime),
    reuseSince: reuse > 0 ? addMs(now, -reuse) : null,
    limit: deps.limits.rule('newOrdersPerAccount'),
  });
  if (!created) {
    throwIfLimited(
      await deps.limits.peek(deps.db, 'newOrdersPerAccount', account.id, now),
      'New orders for this account',
    );
    throw new Error('the new order was neither stored nor refused by its rate limit');
  }
  return orderResponse(deps, created, 201, { Location: deps.urls.order(created.id) });
}

export async function getOrder(c: Context, deps: AcmeDeps): Promise<Response> {
  // Read with the nonce's spend: a poll is one statement.
  const req = await verifyRequest(c, deps, 'kid', { orderId: c.req.param('id')! });
  const order = owned(req.order, requireAccount(req), 'order');
  return orderResponse(deps, order, 200, { Location: deps.urls.order(order.id) });
}
