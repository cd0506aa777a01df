import type { MiddlewareHandler } from 'hono';
import { destination as pinoDestination, pino } from 'pino';

import type { Logger } from '../core/log.ts';

/** Bytes of log lines held before they are written, and how long a line waits at most. */
const LOG_BUFFER_BYTES = 16_384;
const LOG_FLUSH_MS = 200;

/** Buffers whose lines are written when the process exits. */
const held = new Set<WeakRef<LogBuffer>>();
let flushOnExit = false;

/**
 * Log lines gathered and written 16 KiB at a time instead of one `write` each: under load a write
 * per request line cost about a fifth of a cached OCSP answer's CPU. Writes are synchronous
 * (sonic-boom, which retries a full pipe), so lines keep their order with anything else written
 * to stdout once `flush` has run. A line waits at most LOG_FLUSH_MS, and what is held is written
 * when the process exits (also after an uncaught exception): only a SIGKILL can lose the last
 * fraction of a second.
 */
export class LogBuffer {
  private held = '';
  private timer: NodeJS.Timeout | undefined;
  private readonly out: { write(text: string): unknown };

  constructor(destination: number | string | { write(text: string): unknown }) {
    this.out = typeof destination === 'object' ? destination : pinoDestination({ dest: destination, sync: true });
    if (!flushOnExit) process.once('exit', () => held.forEach((ref) => ref.deref()?.flush()));
    flushOnExit = true;
    for (const ref of held) if (ref.deref() === undefined) held.delete(ref);
    held.add(new WeakRef(this));
  }

  write(line: string): void {
    this.held += line;
    if (this.held.length >= LOG_BUFFER_BYTES) this.flush();
    else if (this.timer === undefined) this.timer = setTimeout(() => this.flush(), LOG_FLUSH_MS).unref();
  }

  /** Writes what is held now; pino's `logger.flush(cb)` lands here. */
  flush(cb?: (err?: Error) => void): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const text = this.held;
    this.held = '';
    try {
      if (text !== '') this.out.write(text);
    } catch (err) {
      cb?.(err as Error);
      return;
    }
    cb?.();
  }
}

/** The process's logger: JSON lines on stdout (or `destination`: a file descriptor, path or sink). */
export function createLogger(
  level: string,
  destination: number | string | { write(text: string): unknown } = 1,
): Logger {
  const base = { service: 'keyward' };
  if (level === 'silent') return pino({ level, base }, { write: () => undefined });
  return pino({ level, base }, new LogBuffer(destination));
}

/** Writes every line logged so far (before writing to stdout directly, so lines keep their order). */
export function flushLog(log: Logger): void {
  log.flush();
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
