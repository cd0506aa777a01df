import { chmodSync, existsSync, realpathSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { userInfo } from 'node:os';

import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';

import { CONFIG_HEADER } from '../cli/admin-client.ts';
import { commandsByName } from '../cli/registry.ts';
import type { AppContext } from '../context.ts';
import { describeError } from './errors.ts';

const MAX_BODY = 1024 * 1024;

const real = (file: string) => {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
};

/**
 * A command given its own configuration file must not run with the server's other one: refuse,
 * naming both (settings such as policy or profiles would silently differ from what was asked).
 */
function configMismatch(ctx: AppContext, header: string | undefined): string | undefined {
  if (!header) return undefined;
  const asked = decodeURIComponent(header);
  const running = ctx.config.file;
  if (running !== undefined && real(asked) === real(running)) return undefined;
  return `this command was given the configuration ${asked}, but the server on this data directory runs with ${running ?? 'the built-in defaults (no file)'}; run it with that file (or without --config), or stop the server`;
}

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
    const mismatch = configMismatch(ctx, c.req.header(CONFIG_HEADER));
    if (mismatch) return c.json({ error: { code: 'ConfigMismatch', message: mismatch } }, 409);
    const body = await c.req.text();
    if (body.length > MAX_BODY) return c.json({ error: { code: 'InvalidInput', message: 'request too large' } }, 413);
    let input: unknown;
    try {
      input = JSON.parse(body || '{}');
    } catch {
      return c.json({ error: { code: 'InvalidInput', message: 'the request body is not JSON' } }, 400);
    }
    try {
      // The socket is open to the server's own user only (mode 0600), so that user is who calls:
      // a principal named in the body is not evidence of anything (dual control compares them).
      const principal = `cli:${userInfo().username}`;
      return c.json({ result: await command.run(ctx, { ...(input as object), principal } as never) });
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
