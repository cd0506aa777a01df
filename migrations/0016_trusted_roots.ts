import { type Kysely, sql } from 'kysely';

// A root certificate we trust without holding its key (`keyward ca adopt --trust`): an external
// root that signed an intermediate whose key we were given. Only a root may lack a key; it signs
// nothing here and is listed in /roots.pem so relying parties can validate the adopted issuer.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE issuers ALTER COLUMN key_id DROP NOT NULL`,
    sql`ALTER TABLE issuers ADD CONSTRAINT issuers_key_unless_root CHECK (key_id IS NOT NULL OR kind = 'root')`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
