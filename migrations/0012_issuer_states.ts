import { type Kysely, sql } from 'kysely';

// Issuers as objects with a life: a state (pending → active → retiring → retired), the profiles
// each serves, and what it replaced. `active` stays readable as a column computed from the state,
// so readers written before states existed keep their meaning (issues new certificates).
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE issuers ADD COLUMN state text NOT NULL DEFAULT 'active'
      CHECK (state IN ('pending', 'active', 'retiring', 'retired'))`,
    sql`UPDATE issuers SET state = CASE WHEN active THEN 'active' ELSE 'retiring' END`,
    sql`ALTER TABLE issuers DROP COLUMN active`,
    sql`ALTER TABLE issuers ADD COLUMN active boolean GENERATED ALWAYS AS (state = 'active') STORED`,
    // Profiles this issuer signs; empty = the default issuer (any profile no other active issuer names).
    sql`ALTER TABLE issuers ADD COLUMN profiles jsonb NOT NULL DEFAULT '[]'`,
    sql`ALTER TABLE issuers ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT now()`,
    sql`ALTER TABLE issuers ADD COLUMN replaces text REFERENCES issuers(id)`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
