import { existsSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';

import { Hono } from 'hono';

import type { AppContext } from './context.ts';
import { KeywardError } from './core/errors.ts';
import type { ServedFast } from './core/feature.ts';
import type { Logger } from './core/log.ts';
import { features } from './features.ts';
import { type AdminCommands, listenAdmin } from './http/admin.ts';
import { adminSocketPath, serverRunning } from './http/admin-client.ts';
import { logEvents } from './http/event-log.ts';
import { requestLine, requestLog } from './http/log.ts';
import { metricsHandler, requestMetrics, routeMetrics } from './http/metrics.ts';
import { limitServer, listenerOptions, nodeListener } from './http/node-listener.ts';
import { problemResponse, renderErrors } from './http/problem.ts';
import { publicApp } from './http/public-app.ts';
import { sealedGuard } from './http/sealed.ts';
import {
  issueTlsIdentity,
  loadTlsIdentity,
  renewalDelay,
  storeTlsIdentity,
  temporaryTlsIdentity,
  type TlsIdentity,
} from './http/tls-identity.ts';

export interface RunningServer {
  httpUrl: string;
  httpsUrl: string;
  /** Where GET /metrics answers, when metrics are enabled. */
  metricsUrl: string | undefined;
  adminSocket: string;
  tls: TlsIdentity;
  close(): Promise<void>;
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

function listen(server: Server | HttpsServer, address: string): Promise<number> {
  const { host, port } = splitListen(address);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

function closeServer(server: Server | HttpsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/**
 * The HTTPS listener's certificate: issued by this CA, or, while sealed, the one kept from the last
 * unsealed run (a shares root only), else a temporary self-signed stand-in.
 */
async function listenerIdentity(ctx: AppContext, log: Logger): Promise<TlsIdentity> {
  const dataDir = ctx.config.dataDir;
  if (ctx.kms.sealed) {
    const stored = loadTlsIdentity(dataDir);
    if (stored) return stored;
    log.warn('sealed with no stored HTTPS certificate: serving a temporary self-signed one until unsealed');
    return temporaryTlsIdentity(ctx.config.https.hostnames);
  }
  const identity = await issueTlsIdentity(ctx.issuance, ctx.config.https.hostnames);
  if (ctx.config.rootOfTrust.type === 'shares') storeTlsIdentity(dataDir, identity);
  return identity;
}

/**
 * Wires the listeners for `keyward serve`: HTTPS (API) with a certificate this CA issues to itself
 * and renews, plain HTTP (things that must not need TLS), and the admin protocol (local socket,
 * and the HTTPS admin endpoint) running the CLI's commands: `adminCommands` is passed in, so that
 * nothing here depends on the CLI.
 */
export async function startServer(ctx: AppContext, log: Logger, adminCommands: AdminCommands): Promise<RunningServer> {
  const socket = adminSocketPath(ctx.config.dataDir);
  if (ctx.database.kind === 'embedded' && existsSync(socket) && (await serverRunning(socket))) {
    throw new KeywardError('conflict', `another keyward serve is already running on ${ctx.config.dataDir}`);
  }

  const metrics = ctx.config.metrics;
  const limits = ctx.config.limits;
  const plain = new Hono();
  const api = new Hono();
  for (const [app, listener] of [
    [plain, 'http'],
    [api, 'https'],
  ] as const) {
    app.onError(renderErrors(log));
    app.notFound(() => problemResponse(new KeywardError('notFound', 'No such resource')));
    app.use(requestLog(log, listener));
    if (metrics.enabled) app.use(requestMetrics(listener));
    app.use(sealedGuard(ctx));
    app.route('/', publicApp(ctx));
  }

  // On its own address when one is set (an internal interface), else on the plain HTTP listener.
  let metricsServer: Server | undefined;
  if (metrics.enabled) {
    const scrape = metricsHandler(ctx.database);
    if (metrics.listen) {
      const own = new Hono();
      own.get('/metrics', scrape);
      metricsServer = limitServer(createHttpServer(listenerOptions(limits), nodeListener(own.fetch)), limits);
    } else {
      plain.get('/metrics', scrape);
    }
  }
  const stopEventLog = logEvents(log);

  const parts = features(ctx, log, adminCommands);
  for (const part of parts) {
    part.https?.(api);
    part.http?.(plain);
  }
  // Answers given before the plain app still get its request line and request metrics.
  const plainLine = requestLine(log, 'http');
  const servedFast = (method: string, route: string, status: number): ServedFast => {
    const count = metrics.enabled ? routeMetrics('http', method, route, status) : undefined;
    return (path, startedAt) => {
      const ms = performance.now() - startedAt;
      plainLine(method, path, status, Math.round(ms));
      count?.(ms / 1000);
    };
  };
  const plainFast = parts.flatMap((part) => (part.httpFast ? [part.httpFast(servedFast)] : []));

  const sealedAtStart = ctx.kms.sealed;
  let tls = await listenerIdentity(ctx, log);
  // Client certificates for the data-key API (kms-api.ts): asked for but not required, so ACME
  // clients without one still connect; the handler checks the chain result and the principal.
  const clientAuth = async () => ({
    requestCert: true,
    rejectUnauthorized: false,
    ca: (await ctx.ca.rootsPem()) + (await ctx.ca.intermediatesPem()),
  });
  const https = limitServer(
    createHttpsServer(
      { ...listenerOptions(limits), ...tls.options, ...(await clientAuth()), minVersion: 'TLSv1.2' },
      nodeListener(api.fetch),
    ),
    limits,
  );
  const renewNow = async () => {
    tls = await listenerIdentity(ctx, log);
    https.setSecureContext({ ...tls.options, ca: (await clientAuth()).ca, minVersion: 'TLSv1.2' });
  };
  const http = limitServer(createHttpServer(listenerOptions(limits), nodeListener(plain.fetch, plainFast)), limits);

  let renewTimer: NodeJS.Timeout | undefined;
  const scheduleRenewal = () => {
    renewTimer = setTimeout(async () => {
      try {
        await renewNow();
        log.info({ serial: tls.serial, notAfter: tls.notAfter }, 'renewed the HTTPS certificate');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'renewing the HTTPS certificate failed; retrying in a minute');
        renewTimer = setTimeout(scheduleRenewal, 60_000);
        return;
      }
      scheduleRenewal();
    }, renewalDelay(tls));
    renewTimer.unref();
  };

  const httpsPort = await listen(https, ctx.config.https.listen);
  const httpPort = await listen(http, ctx.config.http.listen);
  const metricsPort = metricsServer && (await listen(metricsServer, metrics.listen!));
  const admin = await listenAdmin(ctx, socket, adminCommands);
  // Background work signs (CRLs, OCSP, validation jobs that finalize), so it starts once unsealed.
  let stops: (() => Promise<void>)[] = [];
  let closed = false;
  const startBackground = () => {
    scheduleRenewal();
    stops = parts.map((part) => part.start?.()).filter((stop) => stop !== undefined);
  };
  if (!sealedAtStart) startBackground();
  else {
    log.warn(
      { dataDir: ctx.config.dataDir },
      'the root of trust is sealed: run keyward unseal (the threshold of share holders)',
    );
    ctx.kms.whenUnsealed(() => {
      void (async () => {
        try {
          await renewNow();
        } catch (err) {
          log.error({ err: (err as Error).message }, 'issuing the HTTPS certificate after unsealing failed');
        }
        if (!closed) startBackground();
        log.info('unsealed: signing, background work and ACME are running');
      })();
    });
  }

  const hostOf = (l: string) => {
    const { host } = splitListen(l);
    return host.includes(':') ? `[${host}]` : host;
  };
  const httpUrl = `http://${hostOf(ctx.config.http.listen)}:${httpPort}`;
  return {
    httpUrl,
    metricsUrl: !metrics.enabled
      ? undefined
      : metricsServer
        ? `http://${hostOf(metrics.listen!)}:${metricsPort}/metrics`
        : `${httpUrl}/metrics`,
    httpsUrl: `https://${ctx.config.https.hostnames[0]!.includes(':') ? `[${ctx.config.https.hostnames[0]}]` : ctx.config.https.hostnames[0]}:${httpsPort}`,
    adminSocket: socket,
    get tls() {
      return tls;
    },
    close: async () => {
      closed = true;
      clearTimeout(renewTimer);
      await Promise.all([
        closeServer(https),
        closeServer(http),
        closeServer(admin),
        ...(metricsServer ? [closeServer(metricsServer)] : []),
      ]);
      await Promise.all(stops.map((stop) => stop()));
      stopEventLog();
    },
  };
}
