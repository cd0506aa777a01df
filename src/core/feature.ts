import type { IncomingMessage, ServerResponse } from 'node:http';

import type { Hono } from 'hono';

/**
 * Answers a request on the node level, before the app is reached, when it can (a hot path that
 * must not pay for routing, middleware and fetch objects); returns false to leave the request,
 * untouched, to the app.
 */
export type FastPath = (req: IncomingMessage, res: ServerResponse) => boolean;

/**
 * What a FastPath reports for each answer it gives, so the request log and the request metrics
 * see it as they see the app's answers: the request's path and `performance.now()` when it began.
 */
export type ServedFast = (path: string, startedAt: number) => void;

/**
 * A part of `keyward serve`: routes on the HTTPS and plain HTTP listeners, and background work
 * (validation jobs, janitors, publishers). `start` returns the function that stops it.
 */
export interface Feature {
  name: string;
  https?(app: Hono): void;
  http?(app: Hono): void;
  /**
   * A fast path on the plain HTTP listener, in front of `http`'s routes. `served` gives the
   * reporter of one route pattern answered with one method and status.
   */
  httpFast?(served: (method: string, route: string, status: number) => ServedFast): FastPath;
  start?(): () => Promise<void>;
}
