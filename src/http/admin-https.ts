import type { Hono } from 'hono';

import { commandsByName } from '../cli/registry.ts';
import type { AppContext } from '../context.ts';
import { adminPrincipal } from './admin-auth.ts';
import { describeError } from './errors.ts';
import type { Feature } from './feature.ts';

const MAX_BODY = 64 * 1024;

/**
 * `POST /admin/v1/<command>` on the HTTPS listener: the admin socket's protocol for administrators
 * on other hosts (`keyward --admin-url`), authenticated by an admin certificate whose identity is
 * the principal (audited, and what dual control compares). Only commands marked adminHttps.
 */
export function adminHttpsFeature(ctx: AppContext): Feature {
  return {
    name: 'admin-https',
    https: (app: Hono) => {
      app.post('/admin/v1/:command', async (c) => {
        const auth = await adminPrincipal(c, ctx.database.db);
        if ('status' in auth)
          return c.json({ type: 'urn:keyward:unauthorized', title: 'Unauthorized', detail: auth.detail }, auth.status);
        const name = c.req.param('command');
        const command = commandsByName.get(name);
        if (!command?.adminHttps)
          return c.json(
            { error: { code: 'NotFound', message: `${name} is not offered on the HTTPS admin endpoint` } },
            404,
          );
        const body = await c.req.text();
        if (body.length > MAX_BODY)
          return c.json({ error: { code: 'InvalidInput', message: 'request too large' } }, 413);
        let input: Record<string, unknown>;
        try {
          input = JSON.parse(body || '{}') as Record<string, unknown>;
        } catch {
          return c.json({ error: { code: 'InvalidInput', message: 'the request body is not JSON' } }, 400);
        }
        try {
          return c.json({ result: await command.run(ctx, { ...input, principal: auth.principal } as never) });
        } catch (err) {
          const { status, code, message } = describeError(err);
          return c.json({ error: { code, message } }, status as 400);
        }
      });
    },
  };
}
