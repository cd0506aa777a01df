import type { MiddlewareHandler } from 'hono';
import { pino } from 'pino';

import type { Logger } from '../core/log.ts';

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'keyward' } });
}

/** Probes that load balancers and orchestrators send every few seconds: logged at debug only. */
const PROBES = new Set(['/health']);

/** One structured line per request; never bodies, since they can carry CSRs, tokens or keys. */
export function requestLog(log: Logger, listener: string): MiddlewareHandler {
  return async (c, next) => {
    const start = performance.now();
    await next();
    const quiet = PROBES.has(c.req.path) && c.res.status < 400;
    log[quiet ? 'debug' : 'info'](
      {
        listener,
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: Math.round(performance.now() - start),
      },
      'request',
    );
  };
}
