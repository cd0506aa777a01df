import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { sql } from 'kysely';

import { CertificateAuthority } from './ca/authority.ts';
import type { Config } from './config/load.ts';
import type { Clock } from './core/clock.ts';
import { KeywardError } from './core/errors.ts';
import { type DatabaseHandle, openDatabase } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';
import { type CaaFreshnessSettings, Issuance } from './issuance/index.ts';
import { type HsmSettings, type KeyHierarchy, openKeyHierarchy, type RootOfTrustOptions } from './kms/index.ts';
import { pinFromFile } from './kms/pkcs11/module.ts';
import { type DnsResolver, resolverForConfig } from './validation/index.ts';

/** Everything a command or a request handler needs; one per process, stateless beyond caches. */
export interface AppContext {
  config: Config;
  database: DatabaseHandle;
  kms: KeyHierarchy;
  ca: CertificateAuthority;
  /** The one decision path every front end issues through. */
  issuance: Issuance;
  close(): Promise<void>;
}

export function rootOfTrustOptions(config: Config): RootOfTrustOptions {
  const rot = config.rootOfTrust;
  if (rot.type === 'shares') return { type: 'shares', threshold: rot.threshold, count: rot.shares };
  return rot.type === 'file'
    ? { type: 'file', path: resolve(config.dataDir, rot.path ?? 'root.key') }
    : { type: 'passphrase', passphrase: config.passphrase };
}

/** CAA freshness at ACME finalize; the resolver is made on first use (most commands never need one). */
function caaFreshness(config: Config): CaaFreshnessSettings {
  let resolver: DnsResolver | undefined;
  return {
    enabled: config.validation.caa,
    maxAgeMs: config.acme.caaRecheckAfter,
    identities: config.acme.caaIdentities,
    resolver: () =>
      (resolver ??= resolverForConfig({
        ...(config.validation.dnsResolver !== undefined ? { dnsResolver: config.validation.dnsResolver } : {}),
        timeoutMs: config.validation.timeout,
      })),
  };
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

/** What a command says where there is no CA to work on. */
export function noCaError(config: Config): KeywardError {
  const where = config.databaseUrl
    ? `in the database ${redactUrl(config.databaseUrl)}`
    : `in ${config.dataDir} (no embedded database at ${join(config.dataDir, 'pg')})`;
  return new KeywardError(
    'notInitialized',
    `there is no CA ${where}; run \`keyward init\` or \`keyward serve\` to create one, or point --data-dir / --config at an existing one`,
  );
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

async function caExists(database: DatabaseHandle): Promise<boolean> {
  const table = await sql<{ found: boolean }>`SELECT to_regclass('issuers') IS NOT NULL AS found`.execute(database.db);
  if (!table.rows[0]?.found) return false;
  const issuers = await sql<{ found: boolean }>`SELECT EXISTS (SELECT 1 FROM issuers) AS found`.execute(database.db);
  return issuers.rows[0]?.found === true;
}

/**
 * Opens the database, brings its schema up to date and opens the key hierarchy and the CA. Only
 * with `create` (`keyward init`, `keyward serve`, tests) may that make a new data directory, root
 * of trust or CA; otherwise a missing CA is an error and nothing is written.
 */
export async function openContext(
  config: Config,
  options: { clock?: Clock; principal?: string; create?: boolean } = {},
): Promise<AppContext> {
  const create = options.create ?? true;
  if (!create && !config.databaseUrl && !existsSync(join(config.dataDir, 'pg'))) throw noCaError(config);
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
  try {
    if (!create && !(await caExists(database))) throw noCaError(config);
    await migrateToLatest(database.db);
    const kms = await openKeyHierarchy(
      database.db,
      rootOfTrustOptions(config),
      options.principal ?? 'keyward',
      hsmSettings(config),
    );
    const ca = new CertificateAuthority(
      database.db,
      kms,
      config.profiles,
      options.clock,
      { baseUrl: config.httpBaseUrl, crlShards: config.revocation.crlShards },
      database.genericPlans,
    );
    const issuance = new Issuance({
      db: database.db,
      ca,
      profiles: config.profiles,
      policy: config.policy,
      revocationUrls: true,
      nameLimit: config.rateLimits.certificatesPerName,
      caa: caaFreshness(config),
      ...(options.clock ? { clock: options.clock } : {}),
    });
    return {
      config,
      database,
      kms,
      ca,
      issuance,
      close: async () => {
        // Usage counts not yet written; a statistic, so a failure here does not stop the close.
        await kms.flushUses().catch(() => undefined);
        await database.close();
      },
    };
  } catch (err) {
    await database.close();
    throw err;
  }
}
