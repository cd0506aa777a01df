import type { MiddlewareHandler } from 'hono';

import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';

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

/** Refuses what a sealed CA can't do: a 503 with Retry-After, rendered by the listener's onError. */
export function sealedGuard(ctx: AppContext): MiddlewareHandler {
  return async (c, next) => {
    if (!ctx.kms.sealed || OPEN_WHILE_SEALED.some((p) => p.test(c.req.path))) return next();
    // RFC 8555 has no "unavailable" type; serverInternal with 503 and Retry-After is what clients retry.
    throw new KeywardError(
      'unavailable',
      'the CA is sealed: its keys stay locked until enough share holders have run keyward unseal; try again later',
      { code: 'Sealed', retryAfter: 30, headers: { 'cache-control': 'no-store' } },
    );
  };
}
