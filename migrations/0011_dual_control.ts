import { type Kysely, sql } from 'kysely';

// Dual control: a trust-changing command proposed by one administrator runs only when another
// approves it within a window. The command's input is sealed (it may carry a passphrase); the
// summary is what an approver reads.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE kms_proposals (
    id text PRIMARY KEY,
    command text NOT NULL,
    summary text NOT NULL,
    sealed_input bytea NOT NULL,
    kek_id uuid NOT NULL,
    kek_version integer NOT NULL,
    proposer text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'executed', 'failed', 'rejected')),
    decided_by text,
    decided_at timestamptz,
    error text
  )`.execute(db);
  await sql`CREATE INDEX kms_proposals_state ON kms_proposals (state, expires_at)`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
