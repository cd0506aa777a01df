import { resolve } from 'node:path';

import { CertificateAuthority, type Clock } from './ca/authority.ts';
import type { Config } from './config/load.ts';
import { type DatabaseHandle, openDatabase } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';
import { type HsmSettings, type KeyHierarchy, openKeyHierarchy, type RootOfTrustOptions } from './kms/index.ts';
import { pinFromFile } from './kms/pkcs11/module.ts';

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

/** The token for protection "hsm" keys, if one is configured. */
export function hsmSettings(config: Config): HsmSettings | undefined {
  const hsm = config.kms.hsm;
  if (!hsm) return undefined;
  return {
    module: hsm.module,
    token: hsm.token,
    pin: pinFromFile(resolve(config.dataDir, hsm.pinFile), hsm.token),
    sessions: hsm.sessions,
  };
}

export async function openContext(
  config: Config,
  options: { clock?: Clock; principal?: string } = {},
): Promise<AppContext> {
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
  try {
    await migrateToLatest(database.db);
    const kms = await openKeyHierarchy(
      database.db,
      rootOfTrustOptions(config),
      options.principal ?? 'keyward',
      hsmSettings(config),
    );
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
