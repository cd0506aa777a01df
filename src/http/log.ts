import type { MiddlewareHandler } from 'hono';
import { pino } from 'pino';

import type { Logger } from '../core/log.ts';

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'keyward' } });
}

/** Probes that load balancers and orchestrators send every few seconds: logged at debug only. */
const PROBES = new Set(['/health']);

/** Writes the request line: what `requestLog` writes, for answers given before the app (FastPath). */
export type RequestLine = (method: string, path: string, status: number, ms: number) => void;

export function requestLine(log: Logger, listener: string): RequestLine {
  // The listener is bound once: the line is the same, and each request adds one small object.
  const line = log.child({ listener });
  return (method, path, status, ms) => {
    const quiet = PROBES.has(path) && status < 400;
    line[quiet ? 'debug' : 'info']({ method, path, status, ms }, 'request');
  };
}

/** One structured line per request; never bodies, since they can carry CSRs, tokens or keys. */
export function requestLog(log: Logger, listener: string): MiddlewareHandler {
  const write = requestLine(log, listener);
  return async (c, next) => {
    const start = performance.now();
    await next();
    write(c.req.method, c.req.path, c.res.status, Math.round(performance.now() - start));
  };
}
