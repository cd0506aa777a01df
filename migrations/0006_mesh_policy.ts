import { type Kysely, sql } from 'kysely';

// Name policy rules per scope, rate-limit counters, mesh bootstrap tokens and the provisioner key.
// Everything a replica must agree on lives here, so any replica can answer any request.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`CREATE TABLE policy_rules (
      id uuid PRIMARY KEY,
      -- 'global', 'issuer:<id>', 'account:<id>' or 'eab:<kid>'
      scope text NOT NULL,
      effect text NOT NULL CHECK (effect IN ('allow', 'deny')),
      kind text NOT NULL CHECK (kind IN ('dns', 'ip', 'uri', 'email')),
      pattern text NOT NULL,
      created_by text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (scope, effect, kind, pattern)
    )`,
    // One row per (limit, key): a fixed window that restarts on the first hit after it ends.
    sql`CREATE TABLE rate_limit_counters (
      name text NOT NULL,
      key text NOT NULL,
      window_start timestamptz NOT NULL,
      count integer NOT NULL,
      PRIMARY KEY (name, key)
    )`,
    sql`CREATE INDEX rate_limit_counters_window ON rate_limit_counters (window_start)`,
    sql`CREATE TABLE mesh_provisioners (
      name text PRIMARY KEY,
      key_id uuid NOT NULL REFERENCES kms_keys(id),
      kid text NOT NULL UNIQUE,
      public_jwk jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    // Every minted token is recorded; used_at is set once by a conditional update (single use).
    sql`CREATE TABLE mesh_tokens (
      jti text PRIMARY KEY,
      kid text NOT NULL,
      names jsonb NOT NULL,
      profile text NOT NULL,
      expires_at timestamptz NOT NULL,
      created_by text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      used_at timestamptz,
      used_serial text
    )`,
    sql`CREATE INDEX mesh_tokens_expires ON mesh_tokens (expires_at)`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
