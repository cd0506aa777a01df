import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort, startTestCa, type TestCa } from '../support/ca.ts';
import { keywardServe } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { captureLog } from '../support/log.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  type: string | undefined;
  body: string;
}

/** A TLS connection to the HTTPS listener, for requests written by hand (slowly, or cut off). */
function open(ca: TestCa): Promise<TLSSocket> {
  const url = new URL(ca.httpsUrl);
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: Number(url.port), servername: 'localhost', ca: ca.rootPem }, () =>
      resolve(s),
    );
    s.once('error', reject);
  });
}

/** Resolves with the time (ms since `from`) the server closed the socket, and what it said. */
function closedBy(socket: TLSSocket, from: number): Promise<{ ms: number; said: string }> {
  let said = '';
  socket.on('data', (d: Buffer) => (said += d.toString()));
  socket.on('error', () => {});
  return new Promise((resolve) => socket.once('close', () => resolve({ ms: Date.now() - from, said })));
}

/** POSTs `size` bytes in chunks without Content-Length (Transfer-Encoding: chunked). */
function chunkedPost(url: string, ca: string, path: string, size: number, contentType: string): Promise<Answer> {
  const u = new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(
      u,
      { method: 'POST', ca, headers: { 'content-type': contentType } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

describe('bounded bodies and connections', () => {
  let ca: TestCa;
  const log = captureLog('info');

  beforeAll(async () => {
    ca = await startTestCa({
      log: log.logger,
      settings: { limits: { headersTimeout: '1s', requestTimeout: '2s', idleTimeout: '5s', maxConnections: 64 } },
    });
  });
  afterAll(async () => ca?.close());

  it.each([
    ['ACME newAccount', '/acme/new-account', 'application/jose+json', 80 * 1024],
    ['mesh /v1/sign', '/v1/sign', 'application/json', 80 * 1024],
    // Far past the limit: the rest is discarded as it arrives, so the client still reads the 413.
    ['ACME newAccount, 1 MiB', '/acme/new-account', 'application/jose+json', 1024 * 1024],
    ['mesh /v1/sign, 1 MiB', '/v1/sign', 'application/json', 1024 * 1024],
  ])('%s: a chunked body over the limit is refused with a 413 problem', async (_name, path, type, size) => {
    const answer = await chunkedPost(ca.httpsUrl, ca.rootPem, path, size, type);
    expect(answer.status).toBe(413);
    expect(answer.type).toBe('application/problem+json');
    expect(JSON.parse(answer.body)).toMatchObject({ type: 'urn:ietf:params:acme:error:malformed' });
  });

  it('a declared Content-Length over the limit is refused before the body is read', async () => {
    const s = await open(ca);
    const closed = closedBy(s, Date.now());
    s.write('POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n');
    s.write(`Content-Length: ${100 * 1024 * 1024}\r\nConnection: close\r\n\r\n`);
    const { said } = await closed;
    expect(said).toMatch(/^HTTP\/1\.1 413/);
    expect(said).toContain('application/problem+json');
  });

  it('slow headers (slowloris) are cut off after headersTimeout; a slow body after requestTimeout', async () => {
    const headers = await open(ca);
    const start = Date.now();
    const headersClosed = closedBy(headers, start);
    const text = 'GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ';
    let i = 0;
    const drip = setInterval(() => {
      if (!headers.destroyed) headers.write(text[i++ % text.length]!);
    }, 200);
    const slowHeaders = await headersClosed;
    clearInterval(drip);
    expect(slowHeaders.ms).toBeLessThan(4_000);

    const body = await open(ca);
    const bodyClosed = closedBy(body, Date.now());
    body.write(
      'POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n',
    );
    const drip2 = setInterval(() => {
      if (!body.destroyed) body.write('{');
    }, 300);
    const slowBody = await bodyClosed;
    clearInterval(drip2);
    expect(slowBody.ms).toBeLessThan(5_000);
    expect(slowBody.said).toMatch(/^HTTP\/1\.1 408/);
  });

  it('an upload the client gives up on is logged at info as a client abort, not as a failure', async () => {
    const s = await open(ca);
    s.write('POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/jose+json\r\n');
    s.write('Content-Length: 5000\r\n\r\n{"protected":');
    await sleep(200);
    s.destroy();
    const aborted = () => log.withMessage('client aborted the request').filter((l) => l.path === '/acme/new-account');
    for (let i = 0; i < 50 && aborted().length === 0; i++) await sleep(50);
    expect(aborted()).toHaveLength(1);
    expect(aborted()[0]).toMatchObject({ level: 30 });
    expect(log.withMessage('request failed')).toEqual([]);
  });
});

// Memory of a real server process (its peak RSS) while 50 clients each send 10 MiB without
// Content-Length: bodies are refused as they stream, never buffered.
describe('memory under 50 concurrent chunked 10 MiB bodies', () => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore();
  });
  afterAll(async () => store?.cleanup());

  it('stays within 150 MB of its idle peak and keeps serving', async () => {
    const httpsPort = await freePort();
    const httpPort = await freePort();
    const configFile = join(store.dataDir, 'keyward.yaml');
    writeFileSync(
      configFile,
      `https: { listen: '127.0.0.1:${httpsPort}' }\nhttp: { listen: '127.0.0.1:${httpPort}' }\nlog: { level: warn }\n`,
    );
    const server = await keywardServe([], { ...store.env, KEYWARD_CONFIG: configFile });
    try {
      const root = await (await fetch(`http://127.0.0.1:${httpPort}/roots.pem`)).text();
      const url = `https://localhost:${httpsPort}`;
      // Warm up (TLS, JIT, the first requests' allocations) before the baseline.
      for (let i = 0; i < 5; i++) await chunkedPost(url, root, '/acme/new-account', 1024, 'application/jose+json');
      const peak = () =>
        Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'))![1]) / 1024;
      const before = peak();
      const answers = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) =>
          chunkedPost(url, root, i % 2 ? '/v1/sign' : '/acme/new-account', 10 * 1024 * 1024, 'application/jose+json'),
        ),
      );
      const after = peak();
      // Each was refused (413), or cut off while still sending once its 413 was written.
      for (const a of answers) if (a.status === 'fulfilled') expect(a.value.status).toBe(413);
      expect(after - before).toBeLessThan(150);
      expect((await fetch(`http://127.0.0.1:${httpPort}/health`)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
