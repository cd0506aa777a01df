import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerOptions, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';

import { getRequestListener } from '@hono/node-server';

import type { FastPath } from '../core/feature.ts';

type FetchHandler = Parameters<typeof getRequestListener>[0];

/**
 * The listener: the fast paths first (src/core/feature.ts), then the app.
 * Fetch `Headers` fold repeated fields into one comma-joined line. For `Link` that is valid
 * (RFC 8288) but some ACME clients (golang.org/x/crypto/acme, hence cert-manager) parse one link
 * per header line, so each link goes out on a line of its own.
 */
export function nodeListener(
  fetch: FetchHandler,
  fastPaths: FastPath[] = [],
): (req: IncomingMessage, res: ServerResponse) => Promise<void> | undefined {
  const inner = getRequestListener(fetch);
  return (req, res) => {
    try {
      for (const fast of fastPaths) if (fast(req, res)) return undefined;
    } catch (err) {
      // A fast path that fails before answering leaves the request to the app; after, the
      // connection can only be cut. Never an uncaught exception in the listener.
      if (res.headersSent) {
        res.destroy(err as Error);
        return undefined;
      }
    }
    const writeHead = res.writeHead;
    res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
      const headers = rest[rest.length - 1];
      if (headers && typeof headers === 'object' && !Array.isArray(headers)) {
        const h = headers as OutgoingHttpHeaders;
        if (typeof h.link === 'string' && h.link.includes(',')) h.link = h.link.split(/,\s*(?=<)/);
      }
      return (writeHead as (...args: unknown[]) => ServerResponse).call(this, status, ...rest);
    } as ServerResponse['writeHead'];
    return inner(req, res);
  };
}

export interface ListenerLimits {
  headersTimeout: number;
  requestTimeout: number;
  idleTimeout: number;
  keepAliveTimeout: number;
  maxConnections: number;
}

/**
 * Options for http(s).createServer that bound how long a client may hold a connection: headers
 * (and, on TLS, the handshake) within headersTimeout, the whole request within requestTimeout
 * (Node answers 408), idle keep-alive connections closed after keepAliveTimeout. Node checks
 * these every connectionsCheckingInterval (30 s by default, which would let a slow client stay
 * up to twice as long), so it checks every second.
 */
export function listenerOptions(limits: ListenerLimits): ServerOptions & { handshakeTimeout: number } {
  return {
    headersTimeout: limits.headersTimeout,
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    connectionsCheckingInterval: Math.min(1_000, limits.headersTimeout),
    handshakeTimeout: limits.headersTimeout,
  };
}

/** The limits createServer takes no option for: idle sockets and the number of connections. */
export function limitServer<S extends Server | HttpsServer>(server: S, limits: ListenerLimits): S {
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleTimeout, (socket) => socket.destroy());
  return server;
}
