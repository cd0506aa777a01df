import type { ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';

import { CLIENT_ABORTED } from '../core/body.ts';
import { asKeywardError, KeywardError, kindForStatus, problemDocument } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { DATABASE_RETRY_AFTER_S, isDatabaseUnavailable } from '../db/unavailable.ts';

/** A KeywardError as application/problem+json (RFC 7807), with its Retry-After and headers. */
export function problemResponse(err: KeywardError): Response {
  const headers = new Headers({ 'Content-Type': 'application/problem+json' });
  for (const [name, value] of Object.entries(err.headers)) headers.append(name, value);
  if (err.retryAfter !== undefined) headers.set('Retry-After', String(err.retryAfter));
  return new Response(JSON.stringify(problemDocument(err)), { status: err.status, headers });
}

// Hono's own middleware (body limits, for one) refuses with an HTTPException that has a status only.
function fromThrown(thrown: unknown): KeywardError {
  if (thrown instanceof HTTPException && thrown.status < 500) {
    return new KeywardError(kindForStatus(thrown.status), thrown.message || `HTTP ${thrown.status}`);
  }
  // A lost database connection is an outage of this request, not a fault in it: clients retry.
  if ((!(thrown instanceof KeywardError) || thrown.kind === 'internal') && isDatabaseUnavailable(thrown)) {
    return databaseUnavailable(thrown);
  }
  return asKeywardError(thrown);
}

/** 503 with Retry-After; serverInternal is what RFC 8555 clients know to retry later. */
export function databaseUnavailable(cause: unknown): KeywardError {
  return new KeywardError('unavailable', 'the database is unavailable; try again shortly', {
    retryAfter: DATABASE_RETRY_AFTER_S,
    code: 'databaseUnavailable',
    cause,
  });
}

/**
 * The one renderer of errors for the HTTP APIs (ACME, mesh, data keys, ARI): every app's
 * `onError`. Failures on our side are logged with their stack and answered without it.
 */
export function renderErrors(log: Logger): ErrorHandler {
  return (thrown, c) => {
    const err = fromThrown(thrown);
    if (err.code === CLIENT_ABORTED) {
      // Nobody is left to answer; not a fault of ours (a 500 at error level would page someone).
      log.info({ path: c.req.path }, 'client aborted the request');
    } else if (err.code === 'databaseUnavailable') {
      log.warn(
        { path: c.req.path, err: thrown instanceof Error ? thrown.message : String(thrown) },
        'database unavailable',
      );
    } else if (err.status >= 500) {
      log.error(
        { err: thrown instanceof Error ? (thrown.stack ?? thrown.message) : String(thrown), path: c.req.path },
        'request failed',
      );
    } else {
      log.info({ path: c.req.path, kind: err.kind, detail: err.message }, 'request refused');
    }
    return problemResponse(err);
  };
}
