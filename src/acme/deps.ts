import type { CertificateAuthority } from '../ca/authority.ts';
import { ADMIN_PROFILE, type Config } from '../config/load.ts';
import type { Profile } from '../config/schema.ts';
import type { Clock } from '../core/clock.ts';
import type { ExpiringMap } from '../core/expiring-map.ts';
import type { Logger } from '../core/log.ts';
import type { Db } from '../db/schema.ts';
import type { Issuance } from '../issuance/index.ts';
import type { RateLimiter } from '../policy/index.ts';
import type { DnsResolver } from '../validation/index.ts';
import type { LimitedAccounts } from './challenge-facts.ts';
import type { NonceService } from './nonce.ts';
import type { OrderCertificate } from './recent-certificates.ts';
import type { AcmeUrls } from './urls.ts';
import type { SecretBox } from './wrap-secrets.ts';

/** The settings ACME reads. */
export type AcmeSettings = Pick<Config, 'acme' | 'validation' | 'policy' | 'profiles' | 'recovery' | 'httpBaseUrl'>;

/**
 * What the ACME handlers share; built once per process by the feature. Narrow on purpose: the
 * handlers translate requests into issuance decisions and read or revoke certificates, nothing else.
 */
export interface AcmeDeps {
  config: AcmeSettings;
  /** The one decision path (src/issuance): name policy at newOrder, decide and sign at finalize. */
  issuance: Issuance;
  /** Reading chains and issuers (the directory's roots) and revoking: the rest of the signing core ACME may touch. */
  certificates: Pick<CertificateAuthority, 'chainFor' | 'chainsFor' | 'revoke' | 'issuers'>;
  db: Db;
  /**
   * The same database, committing without waiting for the WAL flush: for writes whose loss in a
   * crash is harmless because a later flushed commit of the same request covers them (WAL order).
   */
  asyncCommit: Db;
  /** The same database on connections that reuse one plan per statement (DatabaseHandle.genericPlans). */
  genericPlans: Db;
  log: Logger;
  clock: Clock;
  urls: AcmeUrls;
  nonces: NonceService;
  /** Wraps the server's own secrets (nonce MAC key, EAB HMAC keys) with the key hierarchy. */
  secrets: SecretBox;
  /** Rate limits shared by every replica through the database. */
  limits: RateLimiter;
  /** The resolver the challenge checks and their CAA check use. */
  resolver: DnsResolver;
  /** This replica's name on the leases it holds (validation jobs, janitor). */
  holder: string;
  /** Certificates this replica issued in the last minutes, by serial, for their download. */
  recentCertificates: ExpiringMap<string, OrderCertificate>;
  /** Accounts over their failed-validations limit: their challenge POSTs check nothing at once. */
  limitedAccounts: LimitedAccounts;
  /** Wakes this node's validation worker after a job was queued for later. */
  kickWorker(): void;
}

/**
 * Profiles offered to ACME clients: acme.profiles if set, else every configured profile; never
 * `admin`, whose certificates make their holder an administrator (src/http/admin-auth.ts).
 */
export function offeredProfiles(deps: AcmeDeps): Profile[] {
  const all = deps.config.profiles;
  const names = deps.config.acme.profiles ?? [...all.keys()];
  return names
    .filter((n) => n !== ADMIN_PROFILE)
    .map((n) => all.get(n))
    .filter((p): p is Profile => p !== undefined);
}
