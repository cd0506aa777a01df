import { ADMIN_PROFILE } from '../config/load.ts';
import type { Profile } from '../config/schema.ts';
import type { AppContext } from '../context.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Db } from '../db/schema.ts';
import type { RateLimiter } from '../policy/index.ts';
import type { DnsResolver } from '../validation/index.ts';
import type { NonceService } from './nonce.ts';
import type { AcmeUrls } from './urls.ts';
import type { SecretBox } from './wrap-secrets.ts';

/** What the ACME handlers share; built once per process by the feature. */
export interface AcmeDeps {
  ctx: AppContext;
  db: Db;
  log: Logger;
  clock: Clock;
  urls: AcmeUrls;
  nonces: NonceService;
  /** Wraps the server's own secrets (nonce MAC key, EAB HMAC keys) with the key hierarchy. */
  secrets: SecretBox;
  /** Rate limits shared by every replica through the database. */
  limits: RateLimiter;
  /** The resolver validation and the CAA re-check at finalize use. */
  resolver: DnsResolver;
  /** This replica's name on the leases it holds (validation jobs, janitor). */
  holder: string;
  /** Wakes this node's validation worker after a job was queued for later. */
  kickWorker(): void;
}

/**
 * Profiles offered to ACME clients: acme.profiles if set, else every configured profile; never
 * `admin`, whose certificates make their holder an administrator (src/http/admin-auth.ts).
 */
export function offeredProfiles(deps: AcmeDeps): Profile[] {
  const all = deps.ctx.config.profiles;
  const names = deps.ctx.config.acme.profiles ?? [...all.keys()];
  return names
    .filter((n) => n !== ADMIN_PROFILE)
    .map((n) => all.get(n))
    .filter((p): p is Profile => p !== undefined);
}
