import type { AppContext } from '../context.ts';
import type { Feature } from './feature.ts';
import type { Logger } from './log.ts';

// Placeholder until revocation lookups land: CRLs, OCSP and ACME Renewal Information.
export function revocationFeature(_ctx: AppContext, _log: Logger): Feature {
  return { name: 'revocation' };
}
