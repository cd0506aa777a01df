import { type Kysely, sql } from 'kysely';

// `keyward eab revoke`: a revoked External Account Binding key binds no new account, and the
// account it already bound is revoked with it (RFC 8555 §7.1.2 "revoked": deactivated by the server).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE acme_eab_keys ADD COLUMN revoked_at timestamptz`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
