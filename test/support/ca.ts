import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

import { parse, stringify } from 'yaml';

import { commandsByName } from '../../src/cli/registry.ts';
import { type Config, loadConfig } from '../../src/config/load.ts';
import { type AppContext, openContext } from '../../src/context.ts';
import type { Logger } from '../../src/core/log.ts';
import { createLogger } from '../../src/http/log.ts';
import { type RunningServer, startServer } from '../../src/server.ts';
import { copyTestStore, createTestStore, type TestStore } from './db.ts';

/** A TCP port that was free a moment ago (good enough on loopback in tests). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface TestCa {
  store: TestStore;
  config: Config;
  configFile: string;
  ctx: AppContext;
  server: RunningServer | undefined;
  /** https://localhost:<port> and http://127.0.0.1:<port> */
  httpsUrl: string;
  httpUrl: string;
  rootPem: string;
  /** Environment for a child `keyward` process sharing this CA. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export interface TestCaOptions {
  /** Extra YAML settings merged over the test defaults (listeners, dataDir, database). */
  settings?: Record<string, unknown>;
  /** Start the listeners (default true). */
  serve?: boolean;
  /** Reuse an existing store (e.g. a second replica on the same database). */
  store?: TestStore;
  /** The server's logger (default: silent). */
  log?: Logger;
}

/** An initialised CA on a fresh database (PostgreSQL or PGlite), optionally serving on loopback. */
export async function startTestCa(options: TestCaOptions = {}): Promise<TestCa> {
  const store = options.store ?? (await createTestStore());
  const httpsPort = await freePort();
  const httpPort = await freePort();
  const settings: Record<string, unknown> = {
    https: { listen: `127.0.0.1:${httpsPort}`, hostnames: ['localhost', '127.0.0.1'] },
    http: { listen: `127.0.0.1:${httpPort}` },
    profilesDir: join(process.cwd(), 'ca-config', 'profiles'),
    log: { level: 'silent' },
    ...options.settings,
  };
  const configFile = join(store.dataDir, `keyward-${httpsPort}.yaml`);
  writeFileSync(configFile, stringify(settings));
  const config = loadConfig({ configFile, dataDir: store.dataDir, env: { ...store.env } });
  const ctx = await openContext(config, { principal: 'test' });
  const init = await ctx.ca.init(
    { organization: config.ca.organization, root: config.ca.root, intermediate: config.ca.intermediate },
    'test',
  );
  const server =
    options.serve === false ? undefined : await startServer(ctx, options.log ?? createLogger('silent'), commandsByName);
  const { toPem } = await import('../../src/ca/pem.ts');
  return {
    store,
    config,
    configFile,
    ctx,
    server,
    httpsUrl: config.httpsBaseUrl,
    httpUrl: config.httpBaseUrl,
    rootPem: toPem(init.root.certificate),
    env: { ...store.env, KEYWARD_CONFIG: configFile },
    close: async () => {
      await server?.close();
      await ctx.close();
      if (!options.store) await store.cleanup();
    },
  };
}

/**
 * One CA made per file (and `prepare`d), copied for each case that changes it: a copy is a fresh
 * database and data directory with the same keys and history, opened as a restarted process would
 * open it. Cases stay independent of each other at the cost of a database copy and an open, not a
 * CA init. Not serving.
 */
export async function testCaTemplate(
  prepare: (ca: TestCa) => Promise<void> = async () => undefined,
): Promise<{ copy(): Promise<TestCa>; close(): Promise<void> }> {
  const template = await startTestCa({ serve: false });
  await prepare(template);
  await template.ctx.close();
  return {
    copy: async () => {
      const store = await copyTestStore(template.store);
      // Listeners of its own: the template's ports may have been taken since.
      const settings = parse(readFileSync(template.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
      settings.https = { ...settings.https, listen: `127.0.0.1:${await freePort()}` };
      settings.http = { ...settings.http, listen: `127.0.0.1:${await freePort()}` };
      const configFile = join(store.dataDir, template.configFile.slice(template.store.dataDir.length + 1));
      writeFileSync(configFile, stringify(settings));
      const config = loadConfig({ configFile, dataDir: store.dataDir, env: { ...store.env } });
      const ctx = await openContext(config, { principal: 'test' });
      return {
        ...template,
        store,
        config,
        configFile,
        ctx,
        httpsUrl: config.httpsBaseUrl,
        httpUrl: config.httpBaseUrl,
        env: { ...store.env, KEYWARD_CONFIG: configFile },
        close: async () => {
          await ctx.close();
          await store.cleanup();
        },
      };
    },
    close: () => template.store.cleanup(),
  };
}
