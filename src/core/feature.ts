import type { Hono } from 'hono';

/**
 * A part of `keyward serve`: routes on the HTTPS and plain HTTP listeners, and background work
 * (validation jobs, janitors, publishers). `start` returns the function that stops it.
 */
export interface Feature {
  name: string;
  https?(app: Hono): void;
  http?(app: Hono): void;
  start?(): () => Promise<void>;
}
