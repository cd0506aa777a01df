import { type Kysely, sql } from 'kysely';

// A keyed audit chain: its key is a KEK of purpose 'audit', and the head records the first event
// hashed with it. Existing events stay as they are (an unkeyed legacy prefix): re-hashing them
// would void the signed checkpoints and exported copies that vouch for them.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE kms_keks DROP CONSTRAINT kms_keks_purpose_check`,
    sql`ALTER TABLE kms_keks ADD CONSTRAINT kms_keks_purpose_check
      CHECK (purpose IN ('ca-keys', 'app-data', 'import', 'audit'))`,
    sql`ALTER TABLE audit_head ADD COLUMN keyed_from bigint`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
