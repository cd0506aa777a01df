// Landed on main for half an hour before 0018_lean_acme_rows replaced it: it added
// acme_orders.authz_ids (kept) and acme_authzs.validated_by (dropped by 0018_lean_acme_rows, which
// tolerates both). Listed so a database that ran it still upgrades (the migrator refuses an
// executed migration it doesn't know); elsewhere it runs after 0018_lean_acme_rows and does nothing.
export async function up(): Promise<void> {}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
