import { type Kysely, sql } from 'kysely';

// M-of-N root of trust: a root whose key exists only after the threshold of its Shamir shares was
// entered. Its params hold the share set (id, M, N, one digest per share), never the key.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE kms_roots DROP CONSTRAINT kms_roots_provider_check`,
    sql`ALTER TABLE kms_roots ADD CONSTRAINT kms_roots_provider_check
      CHECK (provider IN ('file', 'passphrase', 'pkcs11', 'awskms', 'shares'))`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
