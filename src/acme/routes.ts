import type { Context, Hono, Next } from 'hono';

import { KeywardError } from '../core/errors.ts';
import { keyChange, listOrders, newAccount, updateAccount } from './accounts.ts';
import { postAuthz } from './authz.ts';
import { getCertificate } from './certificates.ts';
import { postChallenge } from './challenges.ts';
import type { AcmeDeps } from './deps.ts';
import { directoryBody } from './directory.ts';
import { finalize } from './finalize.ts';
import { verifyRequest } from './jws.ts';
import { getOrder, newOrder } from './orders.ts';
import { acmeHeaders, emptyResponse, jsonResponse } from './respond.ts';
import { revokeCert } from './revoke.ts';
import { ACME_PREFIX } from './urls.ts';

type Handler = (c: Context, deps: AcmeDeps) => Promise<Response>;

/** POST-only resources; a GET on them is answered 405 with a problem document (RFC 8555 §6.3). */
const POST_ONLY: ReadonlyArray<[string, Handler]> = [
  ['/new-account', newAccount],
  ['/new-order', newOrder],
  ['/revoke-cert', revokeCert],
  ['/key-change', keyChange],
  ['/acct/:id', updateAccount],
  ['/acct/:id/orders', listOrders],
  ['/order/:id', getOrder],
  ['/order/:id/finalize', finalize],
  ['/authz/:id', postAuthz],
  ['/chall/:id', postChallenge],
  ['/chall/:authz/:type', postChallenge],
  ['/cert/:serial', getCertificate],
  ['/cert/:serial/:n', getCertificate],
];

const KNOWN =
  /^\/acme\/(new-account|new-order|revoke-cert|key-change|acct\/[^/]+(\/orders)?|order\/[^/]+(\/finalize)?|authz\/[^/]+|chall\/[^/]+(\/[^/]+)?|cert\/[^/]+(\/[0-9]+)?|directory|new-nonce)$/;

export function mountAcme(app: Hono, deps: AcmeDeps): void {
  const p = ACME_PREFIX;
  app.use(`${p}/*`, acmeHeaders(deps));
  const directory = async () => jsonResponse(await directoryBody(deps));
  app.get(`${p}/directory`, directory);
  // RFC 8555 §6.3 allows POST-as-GET on the directory too; it needs no authentication.
  app.post(`${p}/directory`, directory);

  // Hono answers HEAD with the GET route; RFC 8555 §7.2 wants 200 for HEAD and 204 for GET.
  // Without a Content-Length, Node's HTTP client (acme-client, via axios) cannot tell where a HEAD
  // response ends and closes the connection, so every nonce would cost a new TLS handshake.
  app.get(`${p}/new-nonce`, async (c) =>
    c.req.method === 'HEAD'
      ? emptyResponse(200, { 'Cache-Control': 'no-store', 'Content-Length': '0' })
      : emptyResponse(204, { 'Cache-Control': 'no-store' }),
  );
  app.post(`${p}/new-nonce`, async (c) => {
    await verifyRequest(c, deps, 'kid');
    return emptyResponse(200, { 'Cache-Control': 'no-store' });
  });

  for (const [path, handler] of POST_ONLY) app.post(`${p}${path}`, (c) => handler(c, deps));

  app.all(`${p}/*`, async (c: Context, next: Next) => {
    // ARI is mounted by its own feature, possibly after us.
    if (c.req.path === `${p}/renewal-info` || c.req.path.startsWith(`${p}/renewal-info/`)) return next();
    if (!KNOWN.test(c.req.path)) throw new KeywardError('notFound', `No ACME resource at ${c.req.path}`);
    throw new KeywardError(
      'methodNotAllowed',
      `Method ${c.req.method} is not allowed here; ACME resources are read with POST-as-GET`,
      { headers: { Allow: /\/(directory|new-nonce)$/.test(c.req.path) ? 'GET, HEAD, POST' : 'POST' } },
    );
  });
}
