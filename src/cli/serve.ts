import { createServer } from 'node:net';
import { isIP } from 'node:net';

import type { Config } from '../config/load.ts';
import { openContext } from '../context.ts';
import { isDnsName } from '../core/dns-name.ts';
import { KeywardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { answerStatementStatsOverIpc } from '../db/statement-stats.ts';
import { adminSocketPath, serverRunning } from '../http/admin-client.ts';
import { createLogger, flushLog } from '../http/log.ts';
import { startServer } from '../server.ts';
import { initCommand, type InitOutput } from './ca-commands.ts';
import { UsageError } from './command.ts';
import { commandsByName } from './registry.ts';

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

/** Binds and releases an address, so that a busy port fails before anything is created. */
function checkBindable(setting: string, listen: string): Promise<void> {
  const { host, port } = splitListen(listen);
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new UsageError(
          `${setting} ${listen}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EACCES' ? 'not allowed to bind it (ports below 1024 need privileges)' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.message}`,
        ),
      ),
    );
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * What `serve` checks before it opens the database or creates a CA: no other server on this data
 * directory, hostnames a certificate can carry, and listen addresses it can bind.
 */
export async function preflight(config: Config): Promise<void> {
  if (!config.databaseUrl && (await serverRunning(adminSocketPath(config.dataDir))))
    throw new KeywardError('conflict', `another keyward serve is already running on ${config.dataDir}`);
  for (const name of config.https.hostnames) {
    if (isIP(name) === 0 && !isDnsName(name.toLowerCase(), { singleLabel: true }))
      throw new UsageError(`https.hostnames: "${name}" is neither a DNS name nor an IP address`);
  }
  await checkBindable('https.listen', config.https.listen);
  await checkBindable('http.listen', config.http.listen);
}

/** What `keyward serve` prints once it listens (`--json` prints it as is). */
export interface ServeBanner {
  created: boolean;
  https: string;
  http: string;
  acmeDirectory: string;
  roots: string;
  rootFingerprint: string;
  database: 'postgres' | 'embedded';
  dataDir: string;
}

/** A server `startServe` started: what it would print, and how to stop it. */
export interface Serving {
  banner: ServeBanner;
  log: Logger;
  stop(): Promise<void>;
}

/**
 * What `keyward serve` does before it waits for a signal: the checks, the CA created on first
 * run, the listeners. Tests start a server (or restart one) in their own process with it.
 */
export async function startServe(config: Config): Promise<Serving> {
  await preflight(config);
  const log = createLogger(config.log.level);
  const ctx = await openContext(config, { principal: 'keyward:serve', create: true });
  try {
    const init = (await initCommand.run(ctx, { principal: 'keyward:serve' })) as InitOutput;
    const server = await startServer(ctx, log, commandsByName);
    return {
      banner: {
        created: init.created,
        https: server.httpsUrl,
        http: server.httpUrl,
        acmeDirectory: `${config.httpsBaseUrl}/acme/directory`,
        roots: `${config.httpBaseUrl}/roots.pem`,
        rootFingerprint: init.root.sha256Fingerprint,
        database: ctx.database.kind,
        dataDir: config.dataDir,
      },
      log,
      stop: async () => {
        await server.close();
        await ctx.close();
      },
    };
  } catch (err) {
    await ctx.close();
    throw err;
  }
}

/** `keyward serve`: initialise on first run, serve, and shut down cleanly on SIGTERM/SIGINT. */
export async function serve(config: Config, json: boolean): Promise<void> {
  const { banner, log, stop } = await startServe(config);
  answerStatementStatsOverIpc();
  flushLog(log);
  process.stdout.write(
    json
      ? JSON.stringify(banner) + '\n'
      : `Keyward is running${banner.created ? ' (new CA created)' : ''}.
  HTTPS API        ${banner.https}
  ACME directory   ${banner.acmeDirectory}
  HTTP             ${banner.http}
  Root certificate ${banner.roots}
  Root SHA-256     ${banner.rootFingerprint}
  Database         ${banner.database === 'embedded' ? `embedded (${config.dataDir}/pg)` : 'PostgreSQL'}
Press Ctrl-C to stop.
`,
  );
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      log.info({ signal }, 'shutting down');
      void stop().then(resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
