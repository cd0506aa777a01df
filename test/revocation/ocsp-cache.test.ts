import { request } from 'node:http';

import { sql } from 'kysely';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { seq } from '../../src/ca/der.ts';
import { issuerHashes, makeCertId } from '../../src/ca/ocsp.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { type CapturedLog, captureLog } from '../support/log.ts';
import { openssl } from '../support/pki.ts';
import { scrape } from '../support/prometheus.ts';
import { issueLeaf, pemFiles, waitFor, waitForPresigned } from './helpers.ts';

// Pre-signed OCSP answers are served from process memory. What a relying party must never see is
// a stale "good": a revocation drops the answer on the replica that revoked at once, and on every
// other replica through the database's notifications.

async function ocspUrl(ca: TestCa, serial: string, hash: 'sha1' | 'sha256' = 'sha1'): Promise<string> {
  const intermediate = (await ca.ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!;
  const certId = makeCertId(issuerHashes(intermediate.certificate), hash, Buffer.from(serial, 'hex'));
  const request = seq(seq(seq(seq(certId.raw))));
  return `${ca.httpUrl}/ocsp/${encodeURIComponent(Buffer.from(request).toString('base64'))}`;
}

/** The certStatus of the one SingleResponse, read with pkijs. */
async function status(url: string): Promise<string> {
  const res = await fetch(url);
  if (res.status !== 200) return `HTTP ${res.status}`;
  const ocsp = pkijs.OCSPResponse.fromBER(new Uint8Array(await res.arrayBuffer()));
  const basic = pkijs.BasicOCSPResponse.fromBER(new Uint8Array(ocsp.responseBytes!.response.valueBlock.valueHexView));
  const tag = (basic.tbsResponseData.responses[0]!.certStatus as { idBlock: { tagNumber: number } }).idBlock.tagNumber;
  return ['good', 'revoked', 'unknown'][tag] ?? `tag ${tag}`;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Header names in the order they were sent. */
  names: string[];
  body: Buffer;
}

/** A GET with node:http, which shows the header block as sent; the path goes out as written. */
function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const { hostname, port } = new URL(url);
  const path = url.slice(url.indexOf('/', url.indexOf('//') + 2));
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          names: res.rawHeaders.filter((_, i) => i % 2 === 0),
          body: Buffer.concat(chunks),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Which code answered: both send the same header fields, but the app's Content-Length is added
 * by node (capitalised) and the listener's fast path writes its own.
 */
const answeredBy = (a: Answer) => (a.names.includes('content-length') ? 'fast path' : 'app');

/** Headers that must be the same whichever code answered (Date and max-age move with the clock). */
function sameHeaders(a: Answer, b: Answer): void {
  // The same fields; their order is not something HTTP gives a meaning to.
  const names = (x: Answer) => x.names.map((n) => n.toLowerCase()).sort();
  expect(names(a)).toEqual(names(b));
  for (const h of ['content-type', 'content-length', 'etag', 'last-modified', 'expires', 'connection'])
    expect([h, a.headers[h]]).toEqual([h, b.headers[h]]);
  const maxAge = (x: Answer) =>
    Number(/^max-age=(\d+), public, no-transform, must-revalidate$/.exec(String(x.headers['cache-control']))?.[1]);
  expect(Math.abs(maxAge(a) - maxAge(b))).toBeLessThanOrEqual(1);
}

describe('OCSP answers in memory', () => {
  let ca: TestCa;
  let log: CapturedLog;
  beforeAll(async () => {
    log = captureLog();
    ca = await startTestCa({ log: log.logger, settings: { revocation: { crlPublishDelay: '3s' } } });
    await waitFor(
      'an OCSP signer',
      async () => (await ca.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
    );
  });
  afterAll(async () => ca?.close());

  it('serves a repeated lookup from memory, and a revocation on this replica replaces it at once', async () => {
    const leaf = await issueLeaf(ca);
    await waitForPresigned(ca, leaf.serial);
    const url = await ocspUrl(ca, leaf.serial);
    const first = new Uint8Array(await (await fetch(url)).arrayBuffer());
    // Drop the stored answer behind the server's back: an answer from memory does not notice.
    await ca.ctx.database.db.deleteFrom('ocsp_responses').where('serial', '=', leaf.serial).execute();
    const second = new Uint8Array(await (await fetch(url)).arrayBuffer());
    expect(Buffer.from(second).equals(Buffer.from(first))).toBe(true);
    expect(await status(url)).toBe('good');

    await ca.ctx.ca.revoke(leaf.serial, 1, 'test');
    expect(await status(url)).toBe('revoked');
  });

  it('answers a repeated GET before routing: the same bytes and headers as the app, counted and logged', async () => {
    const leaf = await issueLeaf(ca);
    await waitForPresigned(ca, leaf.serial);
    const t = await pemFiles(ca, leaf);
    try {
      // The request as openssl makes it (SHA-1 CertID, no nonce), sent as RFC 5019 GET.
      const made = openssl(['ocsp', '-issuer', t.inter, '-cert', t.leaf, '-no_nonce', '-reqout', `${t.dir}/req.der`]);
      expect(made.status, made.stderr).toBe(0);
      const b64 = openssl(['base64', '-A', '-in', `${t.dir}/req.der`]).stdout.trim();
      const path = `/ocsp/${encodeURIComponent(b64)}`;
      const url = `${ca.httpUrl}${path}`;

      const first = await get(url);
      expect([first.status, answeredBy(first)]).toEqual([200, 'app']);
      const metricsUrl = ca.server!.metricsUrl!;
      const before = await scrape(metricsUrl);
      const linesBefore = log.withMessage('request').filter((l) => l.path === path).length;
      const fast = await get(url);
      const again = await get(url);
      const after = await scrape(metricsUrl);
      const fastLines = log
        .withMessage('request')
        .filter((l) => l.path === path)
        .slice(linesBefore);
      // A conditional request that does not match goes on to the app, which answers in full.
      const viaApp = await get(url, { 'if-none-match': '"another"' });

      expect([fast.status, answeredBy(fast), answeredBy(again)]).toEqual([200, 'fast path', 'fast path']);
      expect([viaApp.status, answeredBy(viaApp)]).toEqual([200, 'app']);
      expect(fast.body.equals(first.body)).toBe(true);
      expect(viaApp.body.equals(fast.body)).toBe(true);
      sameHeaders(fast, first);
      sameHeaders(fast, viaApp);
      t.file('resp.der', fast.body);
      const checked = openssl(
        ['ocsp', '-respin', `${t.dir}/resp.der`, '-issuer', t.inter, '-cert', t.leaf].concat([
          '-CAfile',
          t.root,
          '-verify_other',
          t.inter,
        ]),
      );
      expect(`${checked.stdout}${checked.stderr}`).toContain(`${t.leaf}: good`);
      // A matching ETag still gets 304 (from the app).
      expect((await get(url, { 'if-none-match': String(fast.headers.etag) })).status).toBe(304);

      const delta = (name: string, labels: Record<string, string>) =>
        after.value(name, labels) - before.value(name, labels);
      expect(delta('keyward_ocsp_responses_total', { source: 'cache' })).toBe(2);
      const route = { listener: 'http', method: 'GET', route: '/ocsp/*', status: '200' };
      expect(delta('keyward_http_requests_total', route)).toBe(2);
      expect(delta('keyward_http_request_duration_seconds_count', { listener: 'http', route: '/ocsp/*' })).toBe(2);
      // The line the app writes for each request, with the same fields.
      expect(fastLines).toEqual(
        [1, 2].map(() => ({
          level: 30,
          time: expect.any(Number),
          service: 'keyward',
          listener: 'http',
          method: 'GET',
          path,
          status: 200,
          ms: expect.any(Number),
          msg: 'request',
        })),
      );
      expect(Object.keys(fastLines[0]!)).toEqual(
        Object.keys(log.withMessage('request').filter((l) => l.path === path)[0]!),
      );
    } finally {
      t.cleanup();
    }
  });

  it('keeps SHA-1 and SHA-256 CertIDs apart: each is answered with its own CertID, from memory too', async () => {
    const leaf = await issueLeaf(ca);
    await waitForPresigned(ca, leaf.serial);
    const hashOf = (body: Buffer) => {
      const ocsp = pkijs.OCSPResponse.fromBER(new Uint8Array(body));
      const basic = pkijs.BasicOCSPResponse.fromBER(
        new Uint8Array(ocsp.responseBytes!.response.valueBlock.valueHexView),
      );
      return basic.tbsResponseData.responses[0]!.certID.hashAlgorithm.algorithmId;
    };
    const SHA1 = '1.3.14.3.2.26';
    const SHA256 = '2.16.840.1.101.3.4.2.1';
    const sha1 = await ocspUrl(ca, leaf.serial, 'sha1');
    const sha256 = await ocspUrl(ca, leaf.serial, 'sha256');
    const seen = [];
    for (const url of [sha1, sha1, sha256, sha256, sha1]) {
      const res = await get(url);
      seen.push([res.status, answeredBy(res), hashOf(res.body)]);
    }
    expect(seen).toEqual([
      [200, 'app', SHA1],
      [200, 'fast path', SHA1],
      [200, 'app', SHA256],
      [200, 'fast path', SHA256],
      [200, 'fast path', SHA1],
    ]);
  });

  it('malformed, odd and oversized GETs get the answers they got before the fast path', async () => {
    const MALFORMED = [0x30, 3, 0x0a, 1, 1];
    const leaf = await issueLeaf(ca);
    await waitForPresigned(ca, leaf.serial);
    const url = await ocspUrl(ca, leaf.serial);
    await get(url);
    expect(answeredBy(await get(url))).toBe('fast path');
    const tail = url.slice(url.indexOf('/ocsp/') + '/ocsp/'.length);

    for (const bad of ['!!not*base64!!', 'QUJD', '%zz', tail.slice(0, -4), `${tail}%2B`]) {
      const res = await get(`${ca.httpUrl}/ocsp/${bad}`);
      expect([bad, res.status, Array.from(res.body), answeredBy(res)]).toEqual([bad, 200, MALFORMED, 'app']);
      expect(res.headers['cache-control']).toBe('no-store');
    }
    // Longer than any request: refused before it is decoded (by node's header limit, as before).
    const huge = await get(`${ca.httpUrl}/ocsp/${'A'.repeat(70_000)}`);
    expect(huge.status).toBe(431);
    // The same request with a query string or a dot segment is the app's to read; it reads the same answer.
    const known = await get(url);
    for (const odd of [`${url}?x=1`, url.replace('/ocsp/', '/ocsp/x/../')]) {
      const res = await get(odd);
      expect([res.status, answeredBy(res), res.body.equals(known.body)]).toEqual([200, 'app', true]);
    }
  });
});

// PGlite admits one process, so a second replica needs PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('OCSP answers in memory, two replicas', () => {
  let a: TestCa;
  let b: TestCa;
  beforeAll(async () => {
    a = await startTestCa({ settings: { revocation: { crlPublishDelay: '3s' } } });
    b = await startTestCa({ store: a.store, settings: { revocation: { crlPublishDelay: '3s' } } });
    await waitFor(
      'an OCSP signer',
      async () => (await a.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
    );
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it("a revocation on another replica drops this replica's answer", async () => {
    const leaf = await issueLeaf(a);
    await waitForPresigned(a, leaf.serial);
    const url = await ocspUrl(a, leaf.serial);
    expect(await status(url)).toBe('good');
    expect(await status(url)).toBe('good');
    expect(answeredBy(await get(url))).toBe('fast path');
    await b.ctx.ca.revoke(leaf.serial, 1, 'test');
    await waitFor('the revoked answer on the other replica', async () => (await status(url)) === 'revoked', 2_000);
    // And the revoked answer is kept in memory: served by the fast path once it is back (a notice
    // of the publisher's own store of it may drop it once more in between).
    const revoked = await waitFor('the revoked answer served from memory', async () => {
      const r = await get(url);
      return answeredBy(r) === 'fast path' ? r : undefined;
    });
    expect(await status(url)).toBe('revoked');
    expect(revoked.body.equals(Buffer.from(await (await fetch(url, { method: 'GET' })).arrayBuffer()))).toBe(true);
  });

  it('a revocation whose notification was lost still reaches the answer', async () => {
    const leaf = await issueLeaf(a);
    await waitForPresigned(a, leaf.serial);
    const url = await ocspUrl(a, leaf.serial);
    expect(await status(url)).toBe('good');
    // Cut both replicas' LISTEN connections, then revoke at once: the notification is lost.
    const { rows } = await sql<{ n: number }>`
      SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'keyward-listen'`.execute(a.ctx.database.db);
    expect(rows[0]!.n).toBe(2);
    await b.ctx.ca.revoke(leaf.serial, 1, 'test');
    // Not cached while listening is down, and cleared when it resumes (within a second or so).
    await waitFor('the revoked answer after reconnecting', async () => (await status(url)) === 'revoked', 3_000);
  });
});
