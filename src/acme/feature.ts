import type { AppContext } from '../context.ts';
import type { Feature } from '../http/feature.ts';
import type { Logger } from '../http/log.ts';

// Placeholder until the ACME front end lands: mounts nothing.
export function acmeFeature(_ctx: AppContext, _log: Logger): Feature {
  return { name: 'acme' };
}
