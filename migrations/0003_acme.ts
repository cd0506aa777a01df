import { type Kysely, sql } from 'kysely';

// The ACME front end: accounts, external account binding keys, orders, authorizations, challenges,
// validation jobs and spent nonces. Every node is stateless, so all of it lives here.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`CREATE TABLE acme_secrets (
      name text PRIMARY KEY,
      value bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    // Nonces are MACed by the server, so issuing one costs no write; only spending one does.
    sql`CREATE TABLE acme_spent_nonces (
      nonce text PRIMARY KEY,
      expires_at timestamptz NOT NULL
    )`,
    sql`CREATE INDEX acme_spent_nonces_expires ON acme_spent_nonces (expires_at)`,
    sql`CREATE TABLE acme_eab_keys (
      key_id text PRIMARY KEY,
      hmac_key bytea NOT NULL,
      label text,
      created_at timestamptz NOT NULL DEFAULT now(),
      account_id text,
      used_at timestamptz
    )`,
    sql`CREATE TABLE acme_accounts (
      id text PRIMARY KEY,
      key_thumbprint text NOT NULL UNIQUE,
      jwk jsonb NOT NULL,
      status text NOT NULL CHECK (status IN ('valid', 'deactivated', 'revoked')),
      contact jsonb NOT NULL DEFAULT '[]',
      tos_agreed boolean NOT NULL DEFAULT false,
      eab_key_id text REFERENCES acme_eab_keys(key_id),
      eab_binding jsonb,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`,
    sql`CREATE TABLE acme_orders (
      id text PRIMARY KEY,
      account_id text NOT NULL REFERENCES acme_accounts(id),
      status text NOT NULL CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
      expires timestamptz NOT NULL,
      identifiers jsonb NOT NULL,
      not_before timestamptz,
      not_after timestamptz,
      profile text NOT NULL,
      replaces text,
      error jsonb,
      certificate_serial text,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`,
    sql`CREATE INDEX acme_orders_account ON acme_orders (account_id, created_at)`,
    sql`CREATE INDEX acme_orders_replaces ON acme_orders (replaces) WHERE replaces IS NOT NULL`,
    sql`CREATE INDEX acme_orders_serial ON acme_orders (certificate_serial) WHERE certificate_serial IS NOT NULL`,
    sql`CREATE TABLE acme_authzs (
      id text PRIMARY KEY,
      account_id text NOT NULL REFERENCES acme_accounts(id),
      identifier_type text NOT NULL CHECK (identifier_type IN ('dns', 'ip')),
      identifier_value text NOT NULL,
      wildcard boolean NOT NULL,
      status text NOT NULL CHECK (status IN ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
      expires timestamptz NOT NULL,
      validated_at timestamptz,
      created_at timestamptz NOT NULL
    )`,
    sql`CREATE INDEX acme_authzs_reuse ON acme_authzs (account_id, identifier_type, identifier_value) WHERE status = 'valid'`,
    sql`CREATE TABLE acme_order_authzs (
      order_id text NOT NULL REFERENCES acme_orders(id) ON DELETE CASCADE,
      authz_id text NOT NULL REFERENCES acme_authzs(id),
      position smallint NOT NULL,
      PRIMARY KEY (order_id, authz_id)
    )`,
    sql`CREATE INDEX acme_order_authzs_authz ON acme_order_authzs (authz_id)`,
    sql`CREATE TABLE acme_challenges (
      id text PRIMARY KEY,
      authz_id text NOT NULL REFERENCES acme_authzs(id) ON DELETE CASCADE,
      type text NOT NULL CHECK (type IN ('http-01', 'dns-01', 'tls-alpn-01')),
      token text NOT NULL UNIQUE,
      status text NOT NULL CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
      error jsonb,
      validated timestamptz
    )`,
    sql`CREATE INDEX acme_challenges_authz ON acme_challenges (authz_id)`,
    // A validation job: any replica may claim one whose lease has lapsed, so a dying replica's
    // job is retried rather than stuck.
    sql`CREATE TABLE acme_jobs (
      id text PRIMARY KEY,
      challenge_id text NOT NULL REFERENCES acme_challenges(id) ON DELETE CASCADE,
      status text NOT NULL CHECK (status IN ('queued', 'done')),
      run_at timestamptz NOT NULL,
      deadline timestamptz NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      lease_holder text,
      lease_until timestamptz,
      created_at timestamptz NOT NULL,
      finished_at timestamptz
    )`,
    sql`CREATE INDEX acme_jobs_due ON acme_jobs (run_at) WHERE status = 'queued'`,
    sql`CREATE UNIQUE INDEX acme_jobs_one_open ON acme_jobs (challenge_id) WHERE status = 'queued'`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
