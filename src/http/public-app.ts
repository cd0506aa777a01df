import { Hono } from 'hono';
import { sql } from 'kysely';

import { expiryWarnings, renewalWindowOf } from '../ca/issuer-expiry.ts';
import type { AppContext } from '../context.ts';

/** Endpoints served on both listeners: health and the trust anchors. */
export function publicApp(ctx: AppContext): Hono {
  const app = new Hono();
  app.get('/health', async (c) => {
    try {
      await sql`SELECT 1`.execute(ctx.database.db);
      // 503 while sealed: a load balancer keeps requests away from a replica that can't sign.
      if (ctx.kms.sealed) {
        const s = await ctx.kms.unsealStatus();
        return c.json(
          {
            status: 'sealed',
            database: ctx.database.kind,
            unseal: { entered: s.entered.length, threshold: s.threshold },
          },
          503,
        );
      }
      // Still serving (200), but an issuer near its end needs an operator: said with the reason.
      const warnings = expiryWarnings(await ctx.ca.issuers(), new Date(), renewalWindowOf(ctx.config.ca.renewal)).map(
        (w) => w.message,
      );
      if (warnings.length) return c.json({ status: 'degraded', database: ctx.database.kind, warnings });
      return c.json({ status: 'ok', database: ctx.database.kind });
    } catch (err) {
      return c.json({ status: 'unavailable', database: ctx.database.kind, error: (err as Error).message }, 503);
    }
  });
  const pem = (body: string) =>
    new Response(body, {
      headers: { 'content-type': 'application/pem-certificate-chain', 'cache-control': 'public, max-age=300' },
    });
  app.get('/roots.pem', async () => pem(await ctx.ca.rootsPem()));
  app.get('/intermediates.pem', async () => pem(await ctx.ca.intermediatesPem()));
  return app;
}
