import { hostname } from 'node:os';

import { acmeFeature } from './acme/feature.ts';
import { renewalWindowOf } from './ca/issuer-expiry.ts';
import { startIssuerRenewal } from './ca/issuer-renewal.ts';
import { startReservationRecovery } from './ca/recovery.ts';
import type { AppContext } from './context.ts';
import type { Feature } from './core/feature.ts';
import type { Logger } from './core/log.ts';
import type { AdminCommands } from './http/admin.ts';
import { adminHttpsFeature } from './http/admin-https.ts';
import { adminWebFeature } from './http/admin-web.tsx';
import { issuersFeature } from './http/issuers.ts';
import { kmsFeature } from './http/kms-api.ts';
import { meshFeature } from './http/mesh.ts';
import { revocationFeature } from './http/revocation.ts';
import { policyRulesFeature } from './policy/rules-cache.ts';

/** Everything `keyward serve` runs besides the health and trust-anchor endpoints. */
export function features(ctx: AppContext, log: Logger, adminCommands: AdminCommands): Feature[] {
  return [
    policyRulesFeature(ctx.database.db, ctx.database.listen, log),
    issuersFeature(ctx, log),
    acmeFeature(ctx, log),
    revocationFeature(ctx, log),
    kmsFeature(ctx, log),
    meshFeature(ctx, log),
    adminHttpsFeature(ctx, adminCommands),
    adminWebFeature(ctx),
    recoveryFeature(ctx, log),
    issuerRenewalFeature(ctx, log),
  ];
}

/** Crash recovery of serial reservations, at start and periodically (see src/ca/recovery.ts). */
function recoveryFeature(ctx: AppContext, log: Logger): Feature {
  return {
    name: 'recovery',
    start: () => {
      const loop = startReservationRecovery(ctx.database.db, log, {
        abandonAfterMs: ctx.config.recovery.abandonAfter,
        intervalMs: ctx.config.recovery.interval,
        holder: `${hostname()}:${process.pid}:recovery`,
      });
      return () => loop.stop();
    },
  };
}

/**
 * Issuers near their end (src/ca/issuer-renewal.ts): warned about in the log at start and every
 * `ca.renewal.checkInterval`, and due intermediates rotated unless `ca.renewal.automatic` is off.
 */
function issuerRenewalFeature(ctx: AppContext, log: Logger): Feature {
  const settings = ctx.config.ca.renewal;
  return {
    name: 'issuer-renewal',
    start: () => {
      const loop = startIssuerRenewal(
        {
          db: ctx.database.db,
          kms: ctx.kms,
          registry: ctx.ca.registry,
          profiles: [...ctx.config.profiles.keys()],
          organization: ctx.config.ca.organization,
        },
        {
          window: renewalWindowOf(settings),
          automatic: settings.automatic,
          intervalMs: settings.checkInterval,
          log: log.child({ feature: 'issuer-renewal' }),
        },
      );
      return () => loop.stop();
    },
  };
}
