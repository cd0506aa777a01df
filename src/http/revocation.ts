import type { Context, Hono } from 'hono';

import { parseAriCertId, renewalInfo } from '../ca/ari.ts';
import { MAX_OCSP_REQUEST_BYTES, ocspErrorResponse } from '../ca/ocsp.ts';
import type { OcspAnswer } from '../ca/ocsp-responder.ts';
import { RevocationPublisher } from '../ca/revocation-publisher.ts';
import { parseCrlFileName } from '../ca/revocation-urls.ts';
import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';
import { events } from '../core/events.ts';
import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';
import { answerHeaders, decodeGetRequest, MAX_GET_CHARS, ocspGetFastPath } from './ocsp-get.ts';

/**
 * Revocation lookups. Plain HTTP (RFC 5280 / RFC 6960 practice, no TLS needed to check revocation):
 *   GET  /crl/<issuer-id>.crl, /crl/<issuer-id>-<shard>.crl   CRLs (see revocation-urls.ts)
 *   POST /ocsp, GET /ocsp/<url-encoded base64 request>       OCSP (RFC 6960 A.1, RFC 5019 5)
 * HTTPS, next to the ACME API:
 *   GET  /acme/renewal-info/<certID>                         ACME Renewal Information (RFC 9773)
 * Background (every replica; leases pick who works): OCSP signer renewal, CRL publishing, OCSP
 * pre-signing.
 */
export function revocationFeature(ctx: AppContext, log: Logger): Feature {
  const service = new RevocationPublisher(ctx);
  const flog = log.child({ feature: 'revocation' });
  const crlCache = new Map<string, { number: string; der: Uint8Array<ArrayBuffer> }>();
  const r = ctx.config.revocation;

  const crl = async (c: Context): Promise<Response> => {
    const name = parseCrlFileName(c.req.param('file') ?? '');
    if (!name) throw new KeywardError('notFound', 'no such CRL: names are <issuer-id>-<shard>.crl');
    const row = await ctx.database.db
      .selectFrom('crls')
      .select(['crl_number', 'this_update', 'next_update'])
      .where('issuer_id', '=', name.issuerId)
      .where('shard', '=', name.shard)
      .where('der', 'is not', null)
      .executeTakeFirst();
    if (!row?.this_update || !row.next_update)
      throw new KeywardError('notFound', 'no such CRL (yet)', { retryAfter: 10 });
    const number = String(row.crl_number);
    const etag = `"crl-${name.issuerId}-${name.shard}-${number}"`;
    const headers: Record<string, string> = {
      'content-type': 'application/pkix-crl',
      etag,
      'last-modified': row.this_update.toUTCString(),
      expires: row.next_update.toUTCString(),
      // Cacheable until nextUpdate, when the CRL must be replaced anyway.
      'cache-control': `public, max-age=${Math.max(0, Math.floor((row.next_update.getTime() - Date.now()) / 1000))}, no-transform`,
    };
    if (matchesEtag(c.req.header('if-none-match'), etag)) return new Response(null, { status: 304, headers });
    const key = `${name.issuerId}:${name.shard}`;
    let cached = crlCache.get(key);
    // A large CRL is read from the database once per CRL number, not once per request.
    if (cached?.number !== number) {
      const full = await ctx.database.db
        .selectFrom('crls')
        .select(['crl_number', 'der'])
        .where('issuer_id', '=', name.issuerId)
        .where('shard', '=', name.shard)
        .executeTakeFirst();
      if (!full?.der || String(full.crl_number) !== number)
        throw new KeywardError('unavailable', 'the CRL changed while it was read; retry', { retryAfter: 1 });
      cached = { number, der: new Uint8Array(full.der) };
      crlCache.set(key, cached);
    }
    return new Response(cached.der, { status: 200, headers });
  };

  const ocspReply = (c: Context, answer: OcspAnswer): Response => {
    events.ocspAnswered.publish({ source: answer.kind === 'error' ? 'error' : answer.cached ? 'cache' : 'signed' });
    if (answer.kind === 'error') {
      flog.debug({ status: answer.status, reason: answer.reason }, 'OCSP request refused');
      return ocspBytes(answer.der, 200, { 'cache-control': 'no-store' });
    }
    // RFC 5019 6.2: a nonce-bound answer is for this request only.
    if (answer.nonce) return ocspBytes(answer.der, 200, { 'cache-control': 'no-store' });
    const headers = answerHeaders(answer);
    if (c.req.method === 'GET' && matchesEtag(c.req.header('if-none-match'), headers.etag))
      return new Response(null, { status: 304, headers });
    return ocspBytes(answer.der, 200, headers);
  };

  const ocspSafely = async (c: Context, der: Uint8Array): Promise<Response> => {
    try {
      return ocspReply(c, await service.responder.answer(der));
    } catch (err) {
      flog.error({ err: (err as Error).message }, 'OCSP responder failed');
      return ocspBytes(ocspErrorResponse('internalError'), 500, { 'cache-control': 'no-store' });
    }
  };

  const malformed = (status = 200): Response =>
    ocspBytes(ocspErrorResponse('malformedRequest'), status, { 'cache-control': 'no-store' });

  return {
    name: 'revocation',
    http: (app: Hono) => {
      app.get('/crl/:file', crl);
      app.post('/ocsp', async (c) => {
        const body = await readLimited(c.req.raw, MAX_OCSP_REQUEST_BYTES);
        // Oversized: refused before parsing; 413 tells proxies and people, the body tells OCSP clients.
        if (body === 'too-large') return malformed(413);
        return ocspSafely(c, body);
      });
      app.get('/ocsp/*', async (c) => {
        const path = new URL(c.req.url).pathname;
        const encoded = path.slice(path.indexOf('/ocsp/') + '/ocsp/'.length);
        if (encoded.length > MAX_GET_CHARS) return malformed(414);
        const der = decodeGetRequest(encoded);
        if (!der) return malformed();
        return ocspSafely(c, der);
      });
      app.get('/ocsp', () => malformed());
    },
    // Answers kept in memory skip the app (see ocsp-get.ts); the route above answers the rest.
    httpFast: (served) => ocspGetFastPath(service.responder, served('GET', '/ocsp/*', 200)),
    https: (app: Hono) => {
      app.get('/acme/renewal-info/:certID', async (c) => {
        const certId = parseAriCertId(c.req.param('certID'));
        const info = await renewalInfo(ctx.database.db, certId);
        if (!info) throw new KeywardError('notFound', 'no certificate with this certID was issued here');
        return new Response(JSON.stringify(info), {
          status: 200,
          headers: {
            'content-type': 'application/json',
            'retry-after': String(Math.round(r.ariRetryAfter / 1000)),
            'cache-control': 'public, max-age=0, no-cache',
          },
        });
      });
    },
    start: () => {
      // Short enough that a revocation reaches the CRL well inside crlPublishDelay.
      const period = Math.min(30_000, Math.max(500, Math.floor(r.crlPublishDelay / 3)));
      let stopped = false;
      let ticking = false;
      let again = false;
      let running: Promise<void> = Promise.resolve();
      let timer: NodeJS.Timeout | undefined;
      const loop = () => {
        clearTimeout(timer);
        ticking = true;
        again = false;
        running = service
          .tick((step, err) => flog.error({ step, err: (err as Error).message }, 'revocation background work failed'))
          .finally(() => {
            ticking = false;
            if (stopped) return;
            if (again) return loop();
            timer = setTimeout(loop, period);
            timer.unref();
          });
      };
      loop();
      // A new intermediate needs its OCSP signer and first CRL before its first certificate is
      // checked (a server that staples OCSP asks at once), not up to a period later.
      const stopWaking = ctx.ca.registry.onChange(() => {
        service.responder.issuersChanged();
        if (stopped) return;
        if (ticking) again = true;
        else loop();
      });
      // Until it follows revocations, the OCSP responder answers from the database only.
      const following = service.responder.follow(ctx.database.listen).catch((err: unknown) => {
        flog.error({ err: (err as Error).message }, 'cannot follow revocations; OCSP answers come from the database');
        return async () => {};
      });
      return async () => {
        stopped = true;
        stopWaking();
        clearTimeout(timer);
        await running;
        await (
          await following
        )();
      };
    },
  };
}

function ocspBytes(der: Uint8Array, status: number, headers: Record<string, string>): Response {
  // A copy on its own ArrayBuffer: what the Response body type wants, and a few hundred bytes.
  return new Response(new Uint8Array(der), {
    status,
    headers: { 'content-type': 'application/ocsp-response', ...headers },
  });
}

function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.trim() === '*' || header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/** The body, or 'too-large' as soon as it passes `limit` bytes (without reading the rest). */
async function readLimited(req: Request, limit: number): Promise<Uint8Array | 'too-large'> {
  const declared = Number(req.headers.get('content-length') ?? '0');
  if (declared > limit) return 'too-large';
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      return 'too-large';
    }
    chunks.push(value);
  }
  return new Uint8Array(Buffer.concat(chunks));
}
