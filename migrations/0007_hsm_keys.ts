import { type Kysely, sql } from 'kysely';

// HSM-resident CA keys (protection 'hsm'): the key pair is generated in a PKCS#11 token and never
// leaves it, so the row keeps no ciphertext, only where the key is (token, CKA_ID, CKA_LABEL), the
// attributes the token reported, and the public key. Also the RSA signature scheme a key was made
// for (PKCS#1 v1.5 or PSS), for every protection.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_backend CHECK (backend IN ('wrapped', 'hsm'))`,
    sql`ALTER TABLE kms_keys ADD COLUMN spki bytea`,
    sql`ALTER TABLE kms_keys ADD COLUMN token_ref jsonb`,
    sql`ALTER TABLE kms_keys ADD COLUMN rsa_scheme text NOT NULL DEFAULT 'pkcs1' CHECK (rsa_scheme IN ('pkcs1', 'pss'))`,
    // An HSM key has its token reference and public key and no wrapped material; a wrapped key the reverse.
    sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_hsm_shape CHECK (
      backend <> 'hsm' OR (token_ref IS NOT NULL AND spki IS NOT NULL AND dek_wrapped IS NULL AND key_ciphertext IS NULL))`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
