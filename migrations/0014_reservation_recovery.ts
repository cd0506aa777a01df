import { type Kysely, sql } from 'kysely';

// Crash recovery: a reservation left without a certificate is marked abandoned after a bound, with
// when that happened and whether the serial had been signed (its sign-certificate audit event), so
// a signature never delivered is still a recorded fact.
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    sql`ALTER TABLE serial_reservations ADD COLUMN abandoned_at timestamptz`,
    sql`ALTER TABLE serial_reservations ADD COLUMN signed boolean`,
    // The recovery sweep looks for old reservations still open; the partial index stays tiny.
    sql`CREATE INDEX serial_reservations_open ON serial_reservations (created_at) WHERE status = 'reserved'`,
  ];
  for (const statement of statements) await statement.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
