import { type Kysely, sql } from 'kysely';

// EAB HMAC keys and the nonce MAC key are stored wrapped (KWE1 under the service-secrets KEK, a
// KEK of purpose 'secrets'). Rows written before hold plaintext and `wrapped = false`; the server
// wraps them when it starts (src/acme/wrap-secrets.ts: a migration can't reach the root of trust).
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE kms_keks DROP CONSTRAINT kms_keks_purpose_check`,
    sql`ALTER TABLE kms_keks ADD CONSTRAINT kms_keks_purpose_check
      CHECK (purpose IN ('ca-keys', 'app-data', 'import', 'audit', 'secrets'))`,
    sql`ALTER TABLE acme_secrets ADD COLUMN wrapped boolean NOT NULL DEFAULT false`,
    sql`ALTER TABLE acme_eab_keys ADD COLUMN wrapped boolean NOT NULL DEFAULT false`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
