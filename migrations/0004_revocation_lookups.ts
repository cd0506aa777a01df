import { type Kysely, sql } from 'kysely';

// Revocation lookups: a second pre-signed OCSP answer per certificate for clients that send SHA-256
// CertIDs (the SHA-1 one stays in `der`, the RFC 5019 default), and an index that lets the CRL
// publisher walk one shard's revoked certificates in serial order, in batches, without sorting.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE ocsp_responses ADD COLUMN der_sha256 bytea`,
    sql`CREATE INDEX certificates_crl_entries ON certificates (issuer_id, crl_shard, serial) WHERE status = 'revoked'`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
