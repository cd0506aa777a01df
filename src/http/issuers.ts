import type { Context, Hono } from 'hono';

import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';
import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';

/**
 * Issuers on the plain HTTP listener and kept current in memory:
 *   GET /issuers/<issuer-id>.cer   AIA caIssuers (DER, RFC 5280 4.2.2.1); /issuer/… for older leaves
 * Background: the issuer rows are cached while this replica hears every change (LISTEN/NOTIFY).
 */
export function issuersFeature(ctx: AppContext, log: Logger): Feature {
  const ilog = log.child({ feature: 'issuers' });
  const certificate = async (c: Context): Promise<Response> => {
    const m = /^([0-9a-f]{16})\.cer$/.exec(c.req.param('file') ?? '');
    const row = m ? (await ctx.ca.issuers()).find((i) => i.id === m[1]) : undefined;
    if (!row) throw new KeywardError('notFound', 'no such issuer: names are <issuer-id>.cer (see /roots.pem)');
    return new Response(new Uint8Array(row.certificate), {
      headers: { 'content-type': 'application/pkix-cert', 'cache-control': 'public, max-age=3600' },
    });
  };
  return {
    name: 'issuers',
    http: (app: Hono) => {
      app.get('/issuers/:file', certificate);
      app.get('/issuer/:file', certificate);
    },
    start: () => {
      // Until it follows changes, every issuer read is a query (always current, one statement more).
      const following = ctx.ca.followIssuers(ctx.database.listen).catch((err: unknown) => {
        ilog.error({ err: (err as Error).message }, 'cannot follow issuer changes; issuers are read per request');
        return async () => {};
      });
      return async () => {
        await (
          await following
        )();
      };
    },
  };
}
