import { sql } from 'kysely';

import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import type { Executor } from '../db/schema.ts';
import { countHit, type RateLimitRule } from '../policy/index.ts';
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
 * newOrder as one statement (RFC 8555 §7.4): the rate-limit hit, the reuse of recent valid
 * authorizations, the new authorizations with one challenge per allowed type, and the order with
 * its authorizations' ids. Nothing is written when the account is over its limit (`undefined` is
 * returned). Arrays, not VALUES lists, so the text (and its prepared plan) is the same for any
 * number of names.
 */
export async function insertOrder(db: Executor, o: NewOrder): Promise<OrderRow | undefined> {
  const ids = o.identifiers.map(authzIdentifier);
  const newIds = ids.map(() => randomId());
  // One challenge per allowed type, by type (the order the authorization shows them in), each with
  // its own token; passed as comma-joined text, one per authorization (types and tokens have no commas).
  const kinds = o.identifiers.map((id) => [...challengeKindsFor(id)].sort());
  const types = kinds.map((k) => k.join(','));
  const tokens = kinds.map((k) => k.map(() => randomId(24)).join(','));
  const limited = o.limit.limit > 0;
  const { rows } = await sql<OrderRow>`
    WITH ids AS (
      SELECT * FROM unnest(${ids.map((_, i) => i)}::int[], ${ids.map((i) => i.type)}::text[],
        ${ids.map((i) => i.value)}::text[], ${ids.map((i) => i.wildcard)}::bool[], ${newIds}::text[],
        ${types}::text[], ${tokens}::text[])
        AS t (pos, type, value, wildcard, new_id, challenge_types, challenge_tokens)),
    counted AS (${countHit(o.limit, o.accountId, o.now)}),
    allowed AS (SELECT NOT ${limited}::bool OR EXISTS (SELECT 1 FROM counted) AS ok),
    reuse AS (
      SELECT DISTINCT ON (ids.pos) ids.pos, a.id
      FROM ids JOIN acme_authzs a ON a.account_id = ${o.accountId} AND a.identifier_type = ids.type
        AND a.identifier_value = ids.value AND a.wildcard = ids.wildcard AND a.status = 'valid'
        AND a.validated_at >= ${o.reuseSince} AND a.expires > ${o.now}
      ORDER BY ids.pos, a.expires DESC),
    chosen AS (
      SELECT ids.*, coalesce(reuse.id, ids.new_id) AS authz_id, reuse.id IS NOT NULL AS reused
      FROM ids LEFT JOIN reuse ON reuse.pos = ids.pos WHERE (SELECT ok FROM allowed)),
    authzs AS (
      INSERT INTO acme_authzs (id, account_id, identifier_type, identifier_value, wildcard, status, expires, created_at,
        order_id, challenge_types, challenge_tokens)
      SELECT new_id, ${o.accountId}, type, value, wildcard, 'pending', ${o.authzExpires}, ${o.now},
        ${o.id}, string_to_array(challenge_types, ','), string_to_array(challenge_tokens, ',')
      FROM chosen WHERE NOT reused),
    ord AS (
      INSERT INTO acme_orders (id, account_id, status, expires, identifiers, not_after, profile, replaces, created_at,
        updated_at, authz_ids)
      SELECT ${o.id}, ${o.accountId}, CASE WHEN bool_and(reused) THEN 'ready' ELSE 'pending' END, ${o.expires},
        ${JSON.stringify(o.identifiers)}::jsonb, ${o.notAfter}::timestamptz, ${o.profile}, ${o.replaces}::text, ${o.now}, ${o.now},
        array_agg(authz_id ORDER BY pos)
      FROM chosen HAVING count(*) > 0
      RETURNING *)
    SELECT * FROM ord`.execute(db);
  return rows[0];
}

/** What an open order becomes when its account or one of its authorizations goes away (RFC 8555 7.1.6). */
export function invalidatedBy(detail: string, now: Date) {
  return {
    status: 'invalid' as const,
    updated_at: now,
    error: JSON.stringify({ type: 'urn:ietf:params:acme:error:unauthorized', detail, status: 403 }),
  };
}
