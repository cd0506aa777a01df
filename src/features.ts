import { acmeFeature } from './acme/feature.ts';
import type { AppContext } from './context.ts';
import { adminHttpsFeature } from './http/admin-https.ts';
import type { Feature } from './http/feature.ts';
import { kmsFeature } from './http/kms-api.ts';
import type { Logger } from './http/log.ts';
import { meshFeature } from './http/mesh.ts';
import { revocationFeature } from './http/revocation.ts';

/** Everything `keyward serve` runs besides the health and trust-anchor endpoints. */
export function features(ctx: AppContext, log: Logger): Feature[] {
  return [
    acmeFeature(ctx, log),
    revocationFeature(ctx, log),
    kmsFeature(ctx, log),
    meshFeature(ctx, log),
    adminHttpsFeature(ctx),
  ];
}
