import { type Kysely, sql } from 'kysely';

// Foreign keys from the rows every issuance writes to parents that are never deleted (issuers,
// ACME accounts). Each insert's check takes FOR KEY SHARE on the parent row: every concurrent
// reservation and certificate locks the same issuer row (a multixact per overlap, with its WAL) and
// every order and authorization its account row. The code writes only ids it has just read from
// those tables, and neither table has a DELETE, so the checks protect nothing the locks are worth.
// References to parents that are deleted (an order's authorizations, a challenge's authorization,
// a certificate's reservation) keep theirs.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE serial_reservations DROP CONSTRAINT IF EXISTS serial_reservations_issuer_id_fkey`,
    sql`ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_issuer_id_fkey`,
    sql`ALTER TABLE acme_orders DROP CONSTRAINT IF EXISTS acme_orders_account_id_fkey`,
    sql`ALTER TABLE acme_authzs DROP CONSTRAINT IF EXISTS acme_authzs_account_id_fkey`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
