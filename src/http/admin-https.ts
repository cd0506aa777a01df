import { Hono } from 'hono';

import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';
import type { Feature } from '../core/feature.ts';
import { type AdminCommands, adminErrorResponse, runAdminCommand } from './admin.ts';
import { adminPrincipal } from './admin-auth.ts';

/**
 * `POST /admin/v1/<command>` on the HTTPS listener: the admin socket's protocol for administrators
 * on other hosts (`keyward --admin-url`), authenticated by an admin certificate whose identity is
 * the principal (audited, and what dual control compares). Only commands marked adminHttps.
 */
export function adminHttpsFeature(ctx: AppContext, commands: AdminCommands): Feature {
  const admin = new Hono();
  admin.onError(adminErrorResponse);
  admin.post('/v1/:command', async (c) => {
    const auth = await adminPrincipal(c, ctx.database.db);
    if ('status' in auth) throw new KeywardError(auth.status === 401 ? 'unauthenticated' : 'unauthorized', auth.detail);
    const name = c.req.param('command');
    const command = commands.get(name);
    if (!command?.adminHttps) throw new KeywardError('notFound', `${name} is not offered on the HTTPS admin endpoint`);
    return runAdminCommand(c, ctx, command, auth.principal, 64 * 1024);
  });
  return { name: 'admin-https', https: (app) => void app.route('/admin', admin) };
}
