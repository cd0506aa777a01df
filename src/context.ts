import { resolve } from 'node:path';

import { CertificateAuthority, type Clock } from './ca/authority.ts';
import type { Config } from './config/load.ts';
import { type DatabaseHandle, openDatabase } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';
import { type KeyHierarchy, openKeyHierarchy, type RootOfTrustOptions } from './kms/index.ts';

/** Everything a command or a request handler needs; one per process, stateless beyond caches. */
export interface AppContext {
  config: Config;
  database: DatabaseHandle;
  kms: KeyHierarchy;
  ca: CertificateAuthority;
  close(): Promise<void>;
}

export function rootOfTrustOptions(config: Config): RootOfTrustOptions {
  const rot = config.rootOfTrust;
  return rot.type === 'file'
    ? { type: 'file', path: resolve(config.dataDir, rot.path ?? 'root.key') }
    : { type: 'passphrase', passphrase: config.passphrase };
}

export async function openContext(
  config: Config,
  options: { clock?: Clock; principal?: string } = {},
): Promise<AppContext> {
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
  try {
    await migrateToLatest(database.db);
    const kms = await openKeyHierarchy(database.db, rootOfTrustOptions(config), options.principal ?? 'keyward');
    const ca = new CertificateAuthority(database.db, kms, config.profiles, options.clock, {
      baseUrl: config.httpBaseUrl,
      crlShards: config.revocation.crlShards,
    });
    return { config, database, kms, ca, close: () => database.close() };
  } catch (err) {
    await database.close();
    throw err;
  }
}
