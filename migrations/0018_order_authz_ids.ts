import { type Kysely, sql } from 'kysely';

// An order's authorizations never change after newOrder, and the method that proved an
// authorization never changes after it turns valid: both are kept on the row that owns them, so
// finalize's claim and the order reads look rows up by primary key instead of joining through
// acme_order_authzs and acme_challenges. Joins on non-unique keys are planned from column
// statistics; a fresh database has none until autovacuum's first ANALYZE, and the planner then
// hashed whole tables on every finalize and challenge (seen in the ACME benchmark: a sequential
// scan of acme_authzs, acme_orders and acme_order_authzs per certificate). The link table stays
// for the one lookup that goes the other way (the orders using an authorization).
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE acme_orders ADD COLUMN authz_ids text[] NOT NULL DEFAULT '{}'`,
    sql`UPDATE acme_orders o
      SET authz_ids = ARRAY(SELECT authz_id FROM acme_order_authzs oa WHERE oa.order_id = o.id ORDER BY position)`,
    sql`ALTER TABLE acme_authzs ADD COLUMN validated_by text`,
    sql`UPDATE acme_authzs a SET validated_by = c.type
      FROM acme_challenges c WHERE c.authz_id = a.id AND c.status = 'valid'`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
