import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';

import { getRequestListener } from '@hono/node-server';

type FetchHandler = Parameters<typeof getRequestListener>[0];

/**
 * Fetch `Headers` fold repeated fields into one comma-joined line. For `Link` that is valid
 * (RFC 8288) but some ACME clients (golang.org/x/crypto/acme, hence cert-manager) parse one link
 * per header line, so each link goes out on a line of its own.
 */
export function nodeListener(fetch: FetchHandler): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const inner = getRequestListener(fetch);
  return (req, res) => {
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
