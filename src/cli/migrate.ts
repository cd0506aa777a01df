import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type { Config } from '../config/load.ts';
import { noCaError } from '../context.ts';
import { openDatabase } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';

/** `keyward migrate`: brings an existing database's schema up to date; creates no CA. */
export async function migrate(config: Config): Promise<{ applied: string[]; current: string[] }> {
  if (!config.databaseUrl && !existsSync(join(config.dataDir, 'pg'))) throw noCaError(config);
  const handle = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
  try {
    return await migrateToLatest(handle.db);
  } finally {
    await handle.close();
  }
}
