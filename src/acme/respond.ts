import type { Context } from 'hono';
import { routePath } from 'hono/route';

import { events } from '../core/events.ts';
import type { AcmeDeps } from './deps.ts';
import { type AcmeProblem, toProblem } from './problem.ts';

export type HeaderMap = Record<string, string | string[]>;

/** `<url>;rel="name"` exactly: several clients match this with strict regexes (interop P9). */
export const link = (url: string, rel: string): string => `<${url}>;rel="${rel}"`;

function build(body: BodyInit | null, status: number, contentType: string | undefined, headers: HeaderMap): Response {
  const h = new Headers();
  if (contentType) h.set('Content-Type', contentType);
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) h.append(name, v);
  }
  return new Response(body, { status, headers: h });
}

export function jsonResponse(body: unknown, status = 200, headers: HeaderMap = {}): Response {
  return build(JSON.stringify(body), status, 'application/json', headers);
}

export function emptyResponse(status: number, headers: HeaderMap = {}): Response {
  return build(null, status, undefined, headers);
}

export function rawResponse(body: string, contentType: string, headers: HeaderMap = {}): Response {
  return build(body, 200, contentType, headers);
}

export function problemResponse(p: AcmeProblem): Response {
  return build(JSON.stringify(p.toJson()), p.status, 'application/problem+json', p.headers);
}

const EXPOSED = 'Link, Replay-Nonce, Location, Retry-After';

/**
 * Wraps an ACME handler: errors become problem documents, and every answer carries a fresh nonce
 * (RFC 8555 §6.5: clients such as certbot fail without one), the index link and CORS headers.
 */
export function acmeRoute(deps: AcmeDeps, handler: (c: Context) => Promise<Response>, opts: { index?: boolean } = {}) {
  return async (c: Context): Promise<Response> => {
    let res: Response;
    let problem: string | undefined;
    try {
      res = await handler(c);
    } catch (err) {
      const p = toProblem(err);
      problem = p.type;
      if (p.status >= 500)
        deps.log.error(
          { err: err instanceof Error ? (err.stack ?? err.message) : String(err), path: c.req.path },
          'ACME request failed',
        );
      res = problemResponse(p);
    }
    try {
      res.headers.set('Replay-Nonce', await deps.nonces.issue());
    } catch (err) {
      deps.log.error({ err: (err as Error).message }, 'could not issue a nonce');
    }
    if (opts.index !== false) res.headers.append('Link', link(deps.urls.directory(), 'index'));
    res.headers.set('Access-Control-Allow-Origin', '*');
    res.headers.set('Access-Control-Expose-Headers', EXPOSED);
    events.acmeRequest.publish({ resource: routePath(c).replace(/^\/acme\//, ''), problem });
    return res;
  };
}
