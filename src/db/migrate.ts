import { type MigrationResultSet, Migrator } from 'kysely';

import { migrations } from '../../migrations/index.ts';
import type { Db } from './schema.ts';

export interface MigrationReport {
  applied: string[];
  current: string[];
}

/**
 * Brings the schema up to date; safe to run from several replicas at once (kysely takes a lock).
 * Unordered: a pending migration may sort before one already run (0018_lean_acme_rows before
 * 0018_order_authz_ids, which it replaced); each is written for any state the others leave.
 */
export async function migrateToLatest(db: Db): Promise<MigrationReport> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    allowUnorderedMigrations: true,
  });
  const result: MigrationResultSet = await migrator.migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`migration ${failed} failed: ${(result.error as Error).message ?? String(result.error)}`);
  }
  const applied = (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
  return { applied, current: Object.keys(migrations) };
}
