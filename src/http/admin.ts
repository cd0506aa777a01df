import { chmodSync, existsSync, realpathSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { userInfo } from 'node:os';

import { getRequestListener } from '@hono/node-server';
import { type Context, Hono } from 'hono';

import type { AppContext } from '../context.ts';
import { nodeIncoming, readBodyText } from '../core/body.ts';
import { asKeywardError, KeywardError } from '../core/errors.ts';
import { CONFIG_HEADER } from './admin-client.ts';

/** What the admin protocol runs: a CLI command's `run` (the CLI passes its registry in). */
export interface AdminCommand {
  /** Offered on the HTTPS admin endpoint too (admin-https.ts), not only on the local socket. */
  adminHttps?: boolean;
  run(ctx: AppContext, input: object & { principal: string }): Promise<unknown>;
}

export type AdminCommands = ReadonlyMap<string, AdminCommand>;

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
function checkConfig(ctx: AppContext, header: string | undefined): void {
  if (!header) return;
  const asked = decodeURIComponent(header);
  const running = ctx.config.file;
  if (running !== undefined && real(asked) === real(running)) return;
  throw new KeywardError(
    'conflict',
    `this command was given the configuration ${asked}, but the server on this data directory runs with ${running ?? 'the built-in defaults (no file)'}; run it with that file (or without --config), or stop the server`,
  );
}

/**
 * The admin protocol's one renderer: the whole error as JSON (kind, code, detail), which the CLI's
 * client (admin-client.ts) turns back into the same KeywardError. Only administrators can ask.
 */
export function adminErrorResponse(thrown: unknown): Response {
  const err = asKeywardError(thrown);
  return new Response(JSON.stringify({ error: err.toJSON() }), {
    status: err.status,
    headers: { 'content-type': 'application/json' },
  });
}

/**
 * Runs one command of the admin protocol. The principal comes from the transport (the socket's
 * owner, or the admin certificate), never from the body: a name in the body is not evidence of
 * anything, and dual control compares principals.
 */
export async function runAdminCommand(
  c: Context,
  ctx: AppContext,
  command: AdminCommand,
  principal: string,
  maxBody: number,
): Promise<Response> {
  checkConfig(ctx, c.req.header(CONFIG_HEADER));
  const body = await readBodyText(c.req.raw, maxBody, undefined, nodeIncoming(c.env));
  let input: unknown;
  try {
    input = JSON.parse(body || '{}');
  } catch {
    throw new KeywardError('malformed', 'the request body is not JSON');
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new KeywardError('malformed', 'the request body is not a JSON object');
  return c.json({ result: await command.run(ctx, { ...input, principal }) });
}

/**
 * The admin socket lets CLI commands run while `serve` holds the embedded database (which admits
 * one process). It is a Unix socket in the data directory that only its owner can open, so that
 * user is who calls.
 */
export function adminApp(ctx: AppContext, commands: AdminCommands): Hono {
  const app = new Hono();
  app.onError(adminErrorResponse);
  app.post('/v1/:command', async (c) => {
    const name = c.req.param('command');
    const command = commands.get(name);
    if (!command) throw new KeywardError('notFound', `unknown command ${name}`);
    return runAdminCommand(c, ctx, command, `cli:${userInfo().username}`, 1024 * 1024);
  });
  return app;
}

export async function listenAdmin(ctx: AppContext, path: string, commands: AdminCommands): Promise<Server> {
  if (existsSync(path)) unlinkSync(path);
  const server = createServer(getRequestListener(adminApp(ctx, commands).fetch));
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
