import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';

import { asKeywardError, kindSpec } from '../core/errors.ts';
import { events } from '../core/events.ts';
import type { AcmeDeps } from './deps.ts';
import { ACME_PREFIX } from './urls.ts';

export type HeaderMap = Record<string, string | string[]>;

/** `<url>;rel="name"` exactly: several clients match this with strict regexes. */
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

const EXPOSED = 'Link, Replay-Nonce, Location, Retry-After';

/**
 * Every ACME answer, refusals included (they come from the app's onError), carries a fresh nonce
 * (RFC 8555 §6.5: clients such as certbot fail without one), the index link and CORS headers.
 */
export function acmeHeaders(deps: Pick<AcmeDeps, 'nonces' | 'urls' | 'log'>): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const path = c.req.path;
    // RFC 9773 renewal information is read with plain GETs and needs no nonce.
    if (path.startsWith(`${ACME_PREFIX}/renewal-info`)) return;
    const headers = c.res.headers;
    try {
      headers.set('Replay-Nonce', await deps.nonces.issue());
    } catch (err) {
      deps.log.error({ err: (err as Error).message }, 'could not issue a nonce');
    }
    if (path !== `${ACME_PREFIX}/directory`) headers.append('Link', link(deps.urls.directory(), 'index'));
    headers.set('Access-Control-Allow-Origin', '*');
    headers.set('Access-Control-Expose-Headers', EXPOSED);
    const problem = c.error === undefined ? undefined : kindSpec(asKeywardError(c.error).kind).acme;
    // After next(), the route index is the handler's, so this names the resource, not `/acme/*`.
    events.acmeRequest.publish({ resource: routePath(c).replace(/^\/acme\//, ''), problem });
  };
}
