import { type Kysely, sql } from 'kysely';

// Revocation: blocked keys, CRL shards, delegated OCSP signers, pre-signed OCSP responses and the
// leases that let exactly one replica produce each of them.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE certificates ADD COLUMN crl_shard smallint NOT NULL DEFAULT 0`,
    sql`CREATE INDEX certificates_shard_revoked ON certificates (issuer_id, crl_shard) WHERE status = 'revoked'`,
    sql`CREATE TABLE blocked_keys (
      spki_sha256 bytea PRIMARY KEY,
      reason text NOT NULL,
      source_serial text,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE crls (
      issuer_id text NOT NULL REFERENCES issuers(id),
      shard smallint NOT NULL,
      crl_number bigint NOT NULL DEFAULT 0,
      der bytea,
      this_update timestamptz,
      next_update timestamptz,
      -- set when a revocation makes the published CRL stale; cleared by the publisher
      stale_since timestamptz,
      PRIMARY KEY (issuer_id, shard)
    )`,
    sql`CREATE TABLE leases (
      name text PRIMARY KEY,
      holder text NOT NULL,
      expires_at timestamptz NOT NULL
    )`,
    sql`CREATE TABLE ocsp_signers (
      id text PRIMARY KEY,
      issuer_id text NOT NULL REFERENCES issuers(id),
      key_id uuid NOT NULL REFERENCES kms_keys(id),
      certificate bytea NOT NULL,
      not_before timestamptz NOT NULL,
      not_after timestamptz NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE INDEX ocsp_signers_issuer ON ocsp_signers (issuer_id, not_after)`,
    sql`CREATE TABLE ocsp_responses (
      serial text PRIMARY KEY REFERENCES certificates(serial),
      der bytea NOT NULL,
      this_update timestamptz NOT NULL,
      next_update timestamptz NOT NULL,
      status text NOT NULL
    )`,
    sql`CREATE INDEX ocsp_responses_next_update ON ocsp_responses (next_update)`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
