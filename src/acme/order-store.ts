import { sql } from 'kysely';

import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import { GroupCommit } from '../db/group-commit.ts';
import { precompiled } from '../db/precompiled.ts';
import type { Executor } from '../db/schema.ts';
import { countHitsOf, type RateLimitRule } from '../policy/index.ts';
import { challengeKindsFor } from '../validation/index.ts';
import { authzIdentifier } from './identifiers.ts';
import { randomId } from './ids.ts';
import type { OrderRow } from './views.ts';

export interface NewOrder {
  id: string;
  accountId: string;
  identifiers: AcmeIdentifierJson[];
  profile: string;
  notAfter: Date | null;
  replaces: string | null;
  now: Date;
  expires: Date;
  authzExpires: Date;
  /** Valid authorizations validated at or after this instant are reused; null: no reuse. */
  reuseSince: Date | null;
  /** The account's new-order limit, counted in the same statement. */
  limit: RateLimitRule;
}

/**
 * newOrder (RFC 8555 §7.4), group-committed across concurrent requests: the rate-limit hit, the
 * reuse of recent valid authorizations, the new authorizations with one challenge per allowed type,
 * and the order with its authorizations' ids, for every order of a batch in one statement. Nothing
 * is written for an order whose account is over its limit (`undefined` is returned). Arrays, not
 * VALUES lists, so the text (and its prepared plan) is the same for any batch.
 */
export function insertOrder(db: Executor, o: NewOrder): Promise<OrderRow | undefined> {
  let group = groups.get(db);
  if (!group) groups.set(db, (group = new GroupCommit((batch) => insertOrders(db, batch))));
  return group.submit(o);
}
const groups = new WeakMap<Executor, GroupCommit<NewOrder, OrderRow | undefined>>();

/**
 * A batch in rounds: in each, an account has at most one order (its limit is one conditional
 * upsert per order) and every order the same limit rule. Usually one round.
 */
async function insertOrders(db: Executor, batch: NewOrder[]): Promise<(OrderRow | undefined)[]> {
  const ruleOf = (o: NewOrder) => `${o.limit.name}/${o.limit.limit}/${o.limit.windowMs}`;
  const rounds: { rule: string; accounts: Set<string>; orders: NewOrder[] }[] = [];
  for (const o of batch) {
    let round = rounds.find((r) => r.rule === ruleOf(o) && !r.accounts.has(o.accountId));
    if (!round) rounds.push((round = { rule: ruleOf(o), accounts: new Set(), orders: [] }));
    round.accounts.add(o.accountId);
    round.orders.push(o);
  }
  const created = new Map<string, OrderRow>();
  for (const round of rounds) for (const row of await insertRound(db, round.orders)) created.set(row.id, row);
  return batch.map((o) => created.get(o.id));
}

function insertRound(db: Executor, orders: NewOrder[]): Promise<OrderRow[]> {
  const names = orders.flatMap((o, k) =>
    o.identifiers.map((identifier, pos) => {
      const id = authzIdentifier(identifier);
      // One challenge per allowed type, by type (the order the authorization shows them in), each
      // with its own token; comma-joined text per authorization (types and tokens have no commas).
      const kinds = [...challengeKindsFor(identifier)].sort();
      return {
        k,
        pos,
        ...id,
        newId: randomId(),
        types: kinds.join(','),
        tokens: kinds.map(() => randomId(24)).join(','),
      };
    }),
  );
  const rule = orders[0]!.limit;
  // The limit's window is judged at the batch's latest time (each order keeps its own).
  const now = new Date(Math.max(...orders.map((o) => o.now.getTime())));
  return newOrders(
    db,
    names.map((n) => n.k),
    names.map((n) => n.pos),
    names.map((n) => n.type),
    names.map((n) => n.value),
    names.map((n) => n.wildcard),
    names.map((n) => n.newId),
    names.map((n) => n.types),
    names.map((n) => n.tokens),
    orders.map((_, k) => k),
    orders.map((o) => o.id),
    orders.map((o) => o.accountId),
    orders.map((o) => JSON.stringify(o.identifiers)),
    orders.map((o) => o.notAfter?.toISOString() ?? null),
    orders.map((o) => o.profile),
    orders.map((o) => o.replaces),
    orders.map((o) => o.now.toISOString()),
    orders.map((o) => o.expires.toISOString()),
    orders.map((o) => o.authzExpires.toISOString()),
    orders.map((o) => o.reuseSince?.toISOString() ?? null),
    rule.name,
    rule.limit,
    now,
    new Date(now.getTime() - rule.windowMs),
  );
}

// Built and compiled once (db/precompiled.ts): every newOrder batch runs it.
const newOrders = precompiled(
  (
    db,
    k: number[],
    pos: number[],
    type: string[],
    value: string[],
    wildcard: boolean[],
    newId: string[],
    types: string[],
    tokens: string[],
    orderK: number[],
    orderId: string[],
    accountId: string[],
    identifiers: string[],
    notAfter: (string | null)[],
    profile: string[],
    replaces: (string | null)[],
    now: string[],
    expires: string[],
    authzExpires: string[],
    reuseSince: (string | null)[],
    ruleName: string,
    limit: number,
    ruleNow: Date,
    cutoff: Date,
  ) =>
    sql<OrderRow>`
    WITH ids AS (
      SELECT * FROM unnest(${k}::int[], ${pos}::int[], ${type}::text[], ${value}::text[], ${wildcard}::bool[],
        ${newId}::text[], ${types}::text[], ${tokens}::text[])
        AS t (k, pos, type, value, wildcard, new_id, challenge_types, challenge_tokens)),
    orders AS (
      SELECT * FROM unnest(${orderK}::int[], ${orderId}::text[], ${accountId}::text[], ${identifiers}::jsonb[],
        ${notAfter}::timestamptz[], ${profile}::text[], ${replaces}::text[], ${now}::timestamptz[],
        ${expires}::timestamptz[], ${authzExpires}::timestamptz[], ${reuseSince}::timestamptz[])
        AS o (k, id, account_id, identifiers, not_after, profile, replaces, now, expires, authz_expires, reuse_since)),
    counted AS (${countHitsOf(
      { name: sql`${ruleName}`, limit: sql`${limit}`, now: sql`${ruleNow}`, cutoff: sql`${cutoff}`, strict: sql`true` },
      sql`${accountId}`,
      sql`${orderId}`,
      sql`(SELECT id FROM orders)`,
    )}),
    allowed AS (SELECT o.* FROM orders o WHERE ${limit}::int <= 0 OR o.account_id IN (SELECT key FROM counted)),
    reuse AS (
      SELECT DISTINCT ON (ids.k, ids.pos) ids.k, ids.pos, a.id
      FROM ids JOIN allowed o ON o.k = ids.k
      JOIN acme_authzs a ON a.account_id = o.account_id AND a.identifier_type = ids.type
        AND a.identifier_value = ids.value AND a.wildcard = ids.wildcard AND a.status = 'valid'
        AND a.validated_at >= o.reuse_since AND a.expires > o.now
      ORDER BY ids.k, ids.pos, a.expires DESC),
    chosen AS (
      SELECT ids.*, o.id AS order_id, o.account_id, o.now, o.authz_expires,
        coalesce(reuse.id, ids.new_id) AS authz_id, reuse.id IS NOT NULL AS reused
      FROM ids JOIN allowed o ON o.k = ids.k LEFT JOIN reuse ON reuse.k = ids.k AND reuse.pos = ids.pos),
    authzs AS (
      INSERT INTO acme_authzs (id, account_id, identifier_type, identifier_value, wildcard, status, expires, created_at,
        order_id, challenge_types, challenge_tokens)
      SELECT new_id, account_id, type, value, wildcard, 'pending', authz_expires, now,
        order_id, string_to_array(challenge_types, ','), string_to_array(challenge_tokens, ',')
      FROM chosen WHERE NOT reused),
    ord AS (
      INSERT INTO acme_orders (id, account_id, status, expires, identifiers, not_after, profile, replaces, created_at,
        updated_at, authz_ids)
      SELECT o.id, o.account_id, CASE WHEN bool_and(c.reused) THEN 'ready' ELSE 'pending' END, o.expires,
        o.identifiers, o.not_after, o.profile, o.replaces, o.now, o.now, array_agg(c.authz_id ORDER BY c.pos)
      FROM allowed o JOIN chosen c ON c.k = o.k
      GROUP BY o.k, o.id, o.account_id, o.expires, o.identifiers, o.not_after, o.profile, o.replaces, o.now
      RETURNING *)
    SELECT * FROM ord`.compile(db),
);

/** What an open order becomes when its account or one of its authorizations goes away (RFC 8555 7.1.6). */
export function invalidatedBy(detail: string, now: Date) {
  return {
    status: 'invalid' as const,
    updated_at: now,
    error: JSON.stringify({ type: 'urn:ietf:params:acme:error:unauthorized', detail, status: 403 }),
  };
}
