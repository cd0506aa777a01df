import { type Kysely, sql } from 'kysely';

// Foundation schema: key hierarchy, audit chain, CA issuers and the certificate inventory.
// Later features add tables in new migrations; this file never changes once released.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`CREATE TABLE installation (
      id smallint PRIMARY KEY CHECK (id = 1),
      install_id uuid NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE kms_roots (
      id uuid PRIMARY KEY,
      provider text NOT NULL CHECK (provider IN ('file', 'passphrase', 'pkcs11', 'awskms')),
      params jsonb NOT NULL DEFAULT '{}',
      kcv bytea,
      state text NOT NULL DEFAULT 'Enabled',
      created_at timestamptz NOT NULL DEFAULT now(),
      retired_at timestamptz
    )`,
    sql`CREATE TABLE kms_keks (
      id uuid PRIMARY KEY,
      name text NOT NULL UNIQUE,
      purpose text NOT NULL CHECK (purpose IN ('ca-keys', 'app-data', 'import')),
      auto_rotate_days integer,
      min_unwrap_version integer NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE kms_kek_versions (
      kek_id uuid NOT NULL REFERENCES kms_keks(id),
      version integer NOT NULL,
      state text NOT NULL DEFAULT 'Enabled',
      is_primary boolean NOT NULL DEFAULT false,
      root_id uuid NOT NULL REFERENCES kms_roots(id),
      wrapped bytea NOT NULL,
      next_root_id uuid REFERENCES kms_roots(id),
      next_wrapped bytea,
      created_at timestamptz NOT NULL DEFAULT now(),
      last_used_at timestamptz,
      deletion_at timestamptz,
      destroyed_at timestamptz,
      PRIMARY KEY (kek_id, version)
    )`,
    sql`CREATE UNIQUE INDEX kms_kek_versions_one_primary ON kms_kek_versions (kek_id) WHERE is_primary`,
    sql`CREATE TABLE kms_keys (
      id uuid PRIMARY KEY,
      usage text NOT NULL CHECK (usage IN ('root-ca', 'intermediate', 'ocsp', 'audit', 'provisioner', 'tls')),
      alg text NOT NULL,
      spki_sha256 bytea NOT NULL,
      backend text NOT NULL DEFAULT 'wrapped',
      state text NOT NULL DEFAULT 'Enabled'
        CHECK (state IN ('Enabled', 'Disabled', 'PendingDeletion', 'PendingImport', 'Destroyed')),
      policy jsonb,
      kek_id uuid REFERENCES kms_keks(id),
      kek_version integer,
      dek_wrapped bytea,
      key_ciphertext bytea,
      external_ref text,
      created_at timestamptz NOT NULL DEFAULT now(),
      deletion_at timestamptz,
      destroyed_at timestamptz,
      use_count bigint NOT NULL DEFAULT 0,
      FOREIGN KEY (kek_id, kek_version) REFERENCES kms_kek_versions(kek_id, version)
    )`,
    sql`CREATE TABLE audit_head (
      id smallint PRIMARY KEY CHECK (id = 1),
      seq bigint NOT NULL,
      hash bytea NOT NULL
    )`,
    sql`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))`,
    sql`CREATE TABLE audit_events (
      seq bigint PRIMARY KEY,
      event_id uuid NOT NULL,
      ts timestamptz NOT NULL,
      principal text NOT NULL,
      action text NOT NULL,
      key_id uuid,
      key_version integer,
      outcome text NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
      error_code text,
      context jsonb NOT NULL DEFAULT '{}',
      prev_hash bytea NOT NULL,
      hash bytea NOT NULL
    )`,
    sql`CREATE INDEX audit_events_key ON audit_events (key_id, seq)`,
    sql`CREATE TABLE issuers (
      id text PRIMARY KEY,
      kind text NOT NULL CHECK (kind IN ('root', 'intermediate')),
      parent_id text REFERENCES issuers(id),
      key_id uuid NOT NULL REFERENCES kms_keys(id),
      certificate bytea NOT NULL,
      subject text NOT NULL,
      ski bytea NOT NULL,
      not_before timestamptz NOT NULL,
      not_after timestamptz NOT NULL,
      active boolean NOT NULL DEFAULT true,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE serial_reservations (
      serial text PRIMARY KEY,
      issuer_id text NOT NULL REFERENCES issuers(id),
      profile text NOT NULL,
      requester text NOT NULL,
      request jsonb NOT NULL,
      status text NOT NULL DEFAULT 'reserved' CHECK (status IN ('reserved', 'issued', 'abandoned')),
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE certificates (
      serial text PRIMARY KEY REFERENCES serial_reservations(serial),
      issuer_id text NOT NULL REFERENCES issuers(id),
      der bytea NOT NULL,
      common_name text,
      sans jsonb NOT NULL,
      not_before timestamptz NOT NULL,
      not_after timestamptz NOT NULL,
      profile text NOT NULL,
      spki_sha256 bytea NOT NULL,
      requester text NOT NULL,
      status text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
      revoked_at timestamptz,
      revocation_reason smallint,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE INDEX certificates_not_after ON certificates (not_after)`,
    sql`CREATE INDEX certificates_revoked ON certificates (issuer_id, revoked_at) WHERE status = 'revoked'`,
    sql`CREATE INDEX certificates_spki ON certificates (spki_sha256)`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('the foundation migration cannot be reverted');
}
