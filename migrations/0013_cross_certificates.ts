import { type Kysely, sql } from 'kysely';

// Root rollover: each root certifies the other (cross-certificates), so relying parties that trust
// either root keep validating. A cross-certificate names the root it certifies and the one that signed it.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`CREATE TABLE issuer_cross_certificates (
      id text PRIMARY KEY,
      subject_issuer_id text NOT NULL REFERENCES issuers(id),
      signer_issuer_id text NOT NULL REFERENCES issuers(id),
      certificate bytea NOT NULL,
      not_after timestamptz NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (subject_issuer_id, signer_issuer_id)
    )`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
