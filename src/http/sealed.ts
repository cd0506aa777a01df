import type { MiddlewareHandler } from 'hono';

import type { AppContext } from '../context.ts';

// While the root of trust is sealed nothing can be signed, so the server answers only what needs
// no key: health (which says sealed), the trust anchors, CRLs and issuer certificates as published,
// OCSP from the answers signed before (ocsp-responder.ts), metrics, and the unseal endpoint.
const OPEN_WHILE_SEALED = [
  /^\/health$/,
  /^\/roots\.pem$/,
  /^\/intermediates\.pem$/,
  /^\/crl\//,
  /^\/issuer\//,
  /^\/ocsp(\/|$)/,
  /^\/metrics$/,
  /^\/admin\/v1\/unseal$/,
];

const RETRY_AFTER = '30';

/** Refuses what a sealed CA can't do: ACME gets a 503 problem document, anything else a 503 too. */
export function sealedGuard(ctx: AppContext): MiddlewareHandler {
  return async (c, next) => {
    if (!ctx.kms.sealed || OPEN_WHILE_SEALED.some((p) => p.test(c.req.path))) return next();
    const detail =
      'the CA is sealed: its keys stay locked until enough share holders have run keyward unseal; try again later';
    // RFC 8555 has no "unavailable" type; serverInternal with 503 and Retry-After is what clients retry.
    const type = c.req.path.startsWith('/acme/') ? 'urn:ietf:params:acme:error:serverInternal' : 'urn:keyward:sealed';
    return c.body(JSON.stringify({ type, detail, status: 503 }), 503, {
      'content-type': 'application/problem+json',
      'retry-after': RETRY_AFTER,
      'cache-control': 'no-store',
    });
  };
}
