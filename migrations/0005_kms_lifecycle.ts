import { type Kysely, sql } from 'kysely';

// KMS lifecycle: KEK-level state and policy (app-data keys are KEKs), wrapped-import jobs, signed
// audit checkpoints, and the index rewrap walks. Forward-only, like every migration.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE kms_keks ADD COLUMN state text NOT NULL DEFAULT 'Enabled'
      CHECK (state IN ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed'))`,
    sql`ALTER TABLE kms_keks ADD COLUMN policy jsonb`,
    sql`ALTER TABLE kms_keks ADD COLUMN deletion_at timestamptz`,
    sql`ALTER TABLE kms_keks ADD COLUMN destroyed_at timestamptz`,
    sql`ALTER TABLE kms_keks ADD COLUMN use_count bigint NOT NULL DEFAULT 0`,
    sql`ALTER TABLE kms_kek_versions ADD CONSTRAINT kms_kek_versions_state
      CHECK (state IN ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed'))`,
    sql`ALTER TABLE kms_roots ADD CONSTRAINT kms_roots_state CHECK (state IN ('Enabled', 'Pending', 'Retired'))`,
    sql`CREATE INDEX kms_keys_kek_version ON kms_keys (kek_id, kek_version, id)`,
    sql`CREATE TABLE kms_import_jobs (
      id uuid PRIMARY KEY,
      target_key_id uuid NOT NULL,
      usage text NOT NULL,
      wrapping_spki bytea NOT NULL,
      -- KWE1 purpose 0x05; set to NULL once the job is used
      wrapping_priv bytea,
      token_sha256 bytea NOT NULL UNIQUE,
      expires_at timestamptz NOT NULL,
      used_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE audit_checkpoints (
      seq bigint PRIMARY KEY,
      head_hash bytea NOT NULL,
      ts timestamptz NOT NULL,
      key_id uuid NOT NULL REFERENCES kms_keys(id),
      spki bytea NOT NULL,
      sig bytea NOT NULL,
      prev_sig bytea NOT NULL
    )`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
