import { hostname } from 'node:os';

import type { AppContext } from '../context.ts';
import { type Clock, systemClock } from '../core/clock.ts';
import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';
import { RateLimiter } from '../policy/index.ts';
import { resolverForConfig } from '../validation/index.ts';
import { LimitedAccounts } from './challenge-facts.ts';
import type { AcmeDeps } from './deps.ts';
import { randomId } from './ids.ts';
import { startJanitor } from './janitor.ts';
import { NonceService } from './nonce.ts';
import { recentCertificates } from './recent-certificates.ts';
import { mountAcme } from './routes.ts';
import { AcmeUrls } from './urls.ts';
import { startValidationWorker, validationConfig, type ValidationWorker } from './worker.ts';
import { secretBox, wrapPlaintextSecrets } from './wrap-secrets.ts';

export interface AcmeFeatureOptions {
  clock?: Clock;
  /** How often an idle validation worker looks for due jobs. */
  pollMs?: number;
}

/** The handlers' shared state; exported so tests and tools can run a sweep or a check directly. */
export function createAcmeDeps(
  ctx: AppContext,
  log: Logger,
  clock: Clock = systemClock,
  kickWorker: () => void = () => {},
): AcmeDeps {
  const secrets = secretBox(ctx.kms);
  return {
    config: ctx.config,
    issuance: ctx.issuance,
    certificates: ctx.ca,
    db: ctx.database.db,
    asyncCommit: ctx.database.asyncCommit,
    genericPlans: ctx.database.genericPlans,
    log: log.child({ feature: 'acme' }),
    clock,
    urls: new AcmeUrls(ctx.config.httpsBaseUrl),
    nonces: new NonceService(ctx.database.db, ctx.database.asyncCommit, ctx.config.acme.nonceLifetime, clock, secrets),
    secrets,
    limits: new RateLimiter(ctx.config.rateLimits),
    resolver: resolverForConfig(validationConfig(ctx.config.validation)),
    holder: `${hostname()}:${process.pid}:${randomId(6)}`,
    recentCertificates: recentCertificates(),
    limitedAccounts: new LimitedAccounts(),
    kickWorker,
  };
}

/** The ACME v2 server (RFC 8555) on the HTTPS listener, with its validation worker and janitor. */
export function acmeFeature(ctx: AppContext, log: Logger, options: AcmeFeatureOptions = {}): Feature {
  let worker: ValidationWorker | undefined;
  const deps = createAcmeDeps(ctx, log, options.clock, () => worker?.kick());
  return {
    name: 'acme',
    https: (app) => mountAcme(app, deps),
    start: () => {
      const w = startValidationWorker(deps, {
        concurrency: ctx.config.validation.concurrency,
        pollMs: options.pollMs ?? 500,
      });
      worker = w;
      const janitor = startJanitor(deps, deps.holder);
      // Secrets stored before they were wrapped (migration 0015) are wrapped now that keys can be unwrapped.
      void wrapPlaintextSecrets(deps.db, deps.secrets).then(
        (n) => n > 0 && deps.log.info({ secrets: n }, 'wrapped secrets stored in plaintext by an older version'),
        (err: unknown) => deps.log.warn({ err: (err as Error).message }, 'wrapping stored plaintext secrets failed'),
      );
      return async () => {
        worker = undefined;
        await w.stop();
        await janitor.stop();
      };
    },
  };
}
