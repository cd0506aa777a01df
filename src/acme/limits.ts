import { KeywardError } from '../core/errors.ts';
import type { RateLimitResult } from '../policy/index.ts';

/** rateLimited (429) with Retry-After, as clients back off on it (RFC 8555 §6.6). */
export function throwIfLimited(result: RateLimitResult & { key?: string }, what: string): void {
  if (result.ok) return;
  throw new KeywardError(
    'rateLimited',
    `${what}: at most ${result.limit} per ${Math.round(result.windowMs / 1000)} s; retry after ${result.retryAfterSeconds} s`,
    { retryAfter: result.retryAfterSeconds },
  );
}
