import type { TLSSocket } from 'node:tls';

import type { HttpBindings } from '@hono/node-server';
import type { Context, Hono } from 'hono';

import type { AppContext } from '../context.ts';
import { nodeIncoming, readBodyText } from '../core/body.ts';
import type { Clock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';
import { spiffeBundle } from '../mesh/bundle.ts';
import { MeshService } from '../mesh/service.ts';
import { signUrl } from '../mesh/tokens.ts';
import { pruneRateLimits } from '../policy/rate-limits.ts';

const MAX_BODY = 64 * 1024;
const PRUNE_EVERY_MS = 10 * 60_000;

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const text = await readBodyText(c.req.raw, MAX_BODY, undefined, nodeIncoming(c.env));
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new KeywardError('malformed', 'the body is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new KeywardError('malformed', 'the body is not a JSON object');
  return parsed as Record<string, unknown>;
}

/** The DER leaf the client presented on this connection, if any (needs requestCert on the listener). */
function peerCertificate(c: Context): Uint8Array | undefined {
  const socket = (c.env as HttpBindings | undefined)?.incoming?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate(true);
  return cert && cert.raw ? new Uint8Array(cert.raw) : undefined;
}

/**
 * Mesh bootstrapping on the HTTPS listener:
 *   POST /v1/sign    {csr, token}  one-time token → certificate chain + CA bundle
 *   POST /v1/renew   {csr}         authenticated by the current certificate over mTLS
 *   GET  /v1/bundle                SPIFFE trust bundle (JWKS of the roots)
 * Errors are application/problem+json with ACME error types.
 */
export function meshFeature(ctx: AppContext, log: Logger, options: { clock?: Clock } = {}): Feature {
  const service = new MeshService({
    db: ctx.database.db,
    issuance: ctx.issuance,
    audience: signUrl(ctx.config),
    roots: () => ctx.ca.rootsPem(),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const mlog = log.child({ feature: 'mesh' });

  // Refusals are rendered by the listener's onError (src/http/problem.ts).
  const handle = (fn: (c: Context) => Promise<unknown>) => async (c: Context) => c.json(await fn(c));

  return {
    name: 'mesh',
    https(app: Hono) {
      app.post(
        '/v1/sign',
        handle(async (c) => service.sign(await jsonBody(c))),
      );
      app.post(
        '/v1/renew',
        handle(async (c) => service.renew(peerCertificate(c), await jsonBody(c))),
      );
      app.get(
        '/v1/bundle',
        handle(async () => spiffeBundle(ctx.database.db, ctx.config.mesh.bundleRefreshHint)),
      );
    },
    start() {
      // Idempotent deletes, so every replica may run this; old rows only cost space.
      const prune = async () => {
        const now = Date.now();
        const longest = Math.max(...Object.values(ctx.config.rateLimits).map((l) => l.window));
        try {
          await pruneRateLimits(ctx.database.db, new Date(now - longest));
          await ctx.database.db
            .deleteFrom('mesh_tokens')
            .where('expires_at', '<', new Date(now - 86_400_000))
            .execute();
        } catch (err) {
          mlog.warn({ err: (err as Error).message }, 'pruning mesh tokens and rate-limit counters failed');
        }
      };
      const timer = setInterval(() => void prune(), PRUNE_EVERY_MS);
      timer.unref();
      return async () => clearInterval(timer);
    },
  };
}
