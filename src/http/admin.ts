import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';

import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';

import { commandsByName } from '../cli/registry.ts';
import type { AppContext } from '../context.ts';
import { describeError } from './errors.ts';

const MAX_BODY = 1024 * 1024;

/**
 * The admin socket lets CLI commands run while `serve` holds the embedded database (which admits
 * one process). It is a Unix socket in the data directory that only its owner can open.
 */
export function adminApp(ctx: AppContext): Hono {
  const app = new Hono();
  app.post('/v1/:command', async (c) => {
    const name = c.req.param('command');
    const command = commandsByName.get(name);
    if (!command) return c.json({ error: { code: 'NotFound', message: `unknown command ${name}` } }, 404);
    const body = await c.req.text();
    if (body.length > MAX_BODY) return c.json({ error: { code: 'InvalidInput', message: 'request too large' } }, 413);
    let input: unknown;
    try {
      input = JSON.parse(body || '{}');
    } catch {
      return c.json({ error: { code: 'InvalidInput', message: 'the request body is not JSON' } }, 400);
    }
    try {
      return c.json({ result: await command.run(ctx, input as never) });
    } catch (err) {
      const { status, code, message } = describeError(err);
      return c.json({ error: { code, message } }, status as 400);
    }
  });
  return app;
}

export async function listenAdmin(ctx: AppContext, path: string): Promise<Server> {
  if (existsSync(path)) unlinkSync(path);
  const server = createServer(getRequestListener(adminApp(ctx).fetch));
  const previous = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(previous);
  }
  chmodSync(path, 0o600);
  return server;
}
