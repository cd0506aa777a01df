import { type Kysely, sql } from 'kysely';

// A certificate's ACME rows, leaner: an order keeps its authorizations' ids (fixed at newOrder),
// and an authorization keeps its challenges (the types offered, their tokens, and the one attempt:
// its type, status and error), the order that created it, and the jobs that retry its check. So
// newOrder writes one row per name instead of five (authorization, three challenges, the link),
// the settle one row instead of two, and every hot lookup is by primary key: joins on non-unique
// keys were planned from statistics a fresh database lacks (the planner then hashed whole tables
// per certificate), and each table and index a statement touches costs PostgreSQL a lock and an
// executor setup per call. One attempt per authorization, as in Let's Encrypt's authz2.
//
// A pending authorization belongs to the order that created it (only valid ones are reused), so
// `order_id` is where a settle looks; the rare lookups of every order using an authorization
// (deactivation, the janitor) go through the account's orders.
//
// Challenge URLs are now /chall/<authorization>/<type>. Those handed out before keep working:
// acme_challenges becomes acme_old_challenge_ids, a map from their ids to the authorization and type. Old replicas must
// be stopped before this release starts (they write the tables this drops).
//
// It replaced 0018_order_authz_ids, which a database may have run first (it sorts after this one,
// hence the migrator's unordered mode): authz_ids may exist already (its values are recomputed the
// same way), and that migration's validated_by column goes.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE acme_orders ADD COLUMN IF NOT EXISTS authz_ids text[] NOT NULL DEFAULT '{}'`,
    sql`ALTER TABLE acme_authzs DROP COLUMN IF EXISTS validated_by`,
    sql`UPDATE acme_orders o
      SET authz_ids = ARRAY(SELECT authz_id FROM acme_order_authzs oa WHERE oa.order_id = o.id ORDER BY position)`,
    sql`ALTER TABLE acme_authzs
      ADD COLUMN order_id text,
      ADD COLUMN challenge_types text[] NOT NULL DEFAULT '{}',
      ADD COLUMN challenge_tokens text[] NOT NULL DEFAULT '{}',
      ADD COLUMN attempted text CHECK (attempted IN ('http-01', 'dns-01', 'tls-alpn-01')),
      ADD COLUMN attempt_status text CHECK (attempt_status IN ('processing', 'valid', 'invalid')),
      ADD COLUMN attempt_error jsonb`,
    sql`UPDATE acme_authzs a SET order_id = (
      SELECT oa.order_id FROM acme_order_authzs oa JOIN acme_orders o ON o.id = oa.order_id
      WHERE oa.authz_id = a.id ORDER BY o.created_at LIMIT 1)`,
    sql`UPDATE acme_authzs a SET challenge_types = c.types, challenge_tokens = c.tokens
      FROM (SELECT authz_id, array_agg(type ORDER BY type) AS types, array_agg(token ORDER BY type) AS tokens
            FROM acme_challenges GROUP BY authz_id) c
      WHERE c.authz_id = a.id`,
    // The attempt: a valid challenge if any, else one being checked, else a failed one.
    sql`UPDATE acme_authzs a SET attempted = c.type, attempt_status = c.status, attempt_error = c.error
      FROM (SELECT DISTINCT ON (authz_id) authz_id, type, status, error FROM acme_challenges WHERE status <> 'pending'
            ORDER BY authz_id, CASE status WHEN 'valid' THEN 0 WHEN 'processing' THEN 1 ELSE 2 END) c
      WHERE c.authz_id = a.id`,
    sql`ALTER TABLE acme_jobs ADD COLUMN authz_id text REFERENCES acme_authzs(id) ON DELETE CASCADE`,
    sql`UPDATE acme_jobs j SET authz_id = c.authz_id FROM acme_challenges c WHERE c.id = j.challenge_id`,
    // A second challenge of one authorization being checked at once (possible before): its job ends.
    sql`UPDATE acme_jobs j SET status = 'done', finished_at = now()
      WHERE status = 'queued' AND NOT EXISTS (
        SELECT 1 FROM acme_challenges c JOIN acme_authzs a ON a.id = c.authz_id
        WHERE c.id = j.challenge_id AND c.type = a.attempted)`,
    sql`DROP INDEX acme_jobs_one_open`,
    sql`ALTER TABLE acme_jobs DROP COLUMN challenge_id`,
    sql`ALTER TABLE acme_jobs ALTER COLUMN authz_id SET NOT NULL`,
    sql`CREATE UNIQUE INDEX acme_jobs_one_open ON acme_jobs (authz_id) WHERE status = 'queued'`,
    sql`ALTER TABLE acme_challenges DROP COLUMN token, DROP COLUMN status, DROP COLUMN error, DROP COLUMN validated`,
    sql`ALTER TABLE acme_challenges RENAME TO acme_old_challenge_ids`,
    sql`DROP TABLE acme_order_authzs`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
