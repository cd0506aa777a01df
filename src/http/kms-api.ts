import type { AppContext } from '../context.ts';
import type { Feature } from './feature.ts';
import type { Logger } from './log.ts';

// Placeholder until the envelope-encryption API and the key janitor land.
export function kmsFeature(_ctx: AppContext, _log: Logger): Feature {
  return { name: 'kms' };
}
