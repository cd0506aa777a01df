import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { checkHttp01 } from '../../src/validation/http01.ts';
import {
  createDnsResolver,
  type DnsResolver,
  validateChallenge,
  type ValidationConfig,
} from '../../src/validation/index.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { closedPort, closeServer, listen, selfSignedCert, testConfig } from './helpers.ts';

const NAME = 'web.example.test';
const TOKEN = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA';
const KEY_AUTH = `${TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;
const PATH = `/.well-known/acme-challenge/${TOKEN}`;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

let dns: TestDnsServer;
let resolver: DnsResolver;
let server: http.Server;
let tlsServer: https.Server;
let httpPort: number;
let httpsPort: number;
let routes: Map<string, Handler>;
const seen: { host: string | undefined; path: string | undefined; tls: boolean }[] = [];

const handle =
  (tls: boolean): Handler =>
  (req, res) => {
    seen.push({ host: req.headers.host, path: req.url, tls });
    const route = routes.get(req.url ?? '');
    if (route) route(req, res);
    else res.writeHead(404).end('not found');
  };

const redirect =
  (location: string, status = 302): Handler =>
  (_req, res) =>
    res.writeHead(status, { Location: location }).end();

let cfg: ValidationConfig;

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = createDnsResolver({ server: dns.address, timeoutMs: 2_000 });
  server = http.createServer(handle(false));
  httpPort = await listen(server);
  const { certPem, keyPem } = await selfSignedCert({ sans: [{ type: 'dns', value: 'unrelated.invalid' }] });
  tlsServer = https.createServer({ cert: certPem, key: keyPem }, handle(true));
  httpsPort = await listen(tlsServer);
  cfg = testConfig({ httpPort, tlsAlpnPort: httpsPort, dnsResolver: dns.address });
});

afterAll(async () => {
  await closeServer(server);
  await closeServer(tlsServer);
  await dns.close();
});

afterEach(() => {
  seen.length = 0;
  dns.clear();
});

function setup(extra: Record<string, Handler> = {}): void {
  dns.setA(NAME, '127.0.0.1');
  dns.setA('other.example.test', '127.0.0.1');
  routes = new Map(Object.entries(extra));
}

const check = (c: ValidationConfig = cfg, name = NAME) =>
  checkHttp01({ type: 'dns', value: name }, TOKEN, KEY_AUTH, c, resolver);

describe('http-01', () => {
  it('accepts the key authorization, ignoring trailing whitespace, with Host = name', async () => {
    setup({ [PATH]: (_req, res) => res.end(`${KEY_AUTH}\r\n`) });
    const out = await check();
    expect(out).toEqual({ ok: true, addressesUsed: ['127.0.0.1'] });
    expect(seen).toEqual([{ host: `${NAME}:${httpPort}`, path: PATH, tls: false }]);
  });

  it('validates an IP identifier by connecting to the IP itself', async () => {
    setup({ [PATH]: (_req, res) => res.end(KEY_AUTH) });
    const out = await checkHttp01({ type: 'ip', value: '127.0.0.1' }, TOKEN, KEY_AUTH, cfg, resolver);
    expect(out).toEqual({ ok: true, addressesUsed: ['127.0.0.1'] });
    expect(seen[0]?.host).toBe(`127.0.0.1:${httpPort}`);
  });

  it('goes through validateChallenge', async () => {
    setup({ [PATH]: (_req, res) => res.end(KEY_AUTH) });
    const out = await validateChallenge('http-01', { type: 'dns', value: NAME }, TOKEN, KEY_AUTH, cfg, resolver);
    expect(out.ok).toBe(true);
  });

  it('rejects a wrong body as incorrectResponse, echoing it truncated', async () => {
    setup({ [PATH]: (_req, res) => res.end(`wrong-${'x'.repeat(1000)}`) });
    const out = await check();
    expect(out.ok).toBe(false);
    if (out.ok) return;
    expect(out.problem.type).toBe('incorrectResponse');
    expect(out.problem.detail).toContain('did not match');
    expect(out.problem.detail.length).toBeLessThan(600);
  });

  it('treats leading whitespace as a mismatch', async () => {
    setup({ [PATH]: (_req, res) => res.end(` ${KEY_AUTH}`) });
    const out = await check();
    expect(out.ok === false && out.problem.type).toBe('incorrectResponse');
  });

  it('reports a 404 as unauthorized with the URL', async () => {
    setup();
    const out = await check();
    expect(out).toEqual({
      ok: false,
      problem: {
        type: 'unauthorized',
        detail: `127.0.0.1: Invalid response from http://${NAME}:${httpPort}${PATH}: 404`,
      },
    });
  });

  it('reports a refused connection as connection', async () => {
    setup();
    const out = await check({ ...cfg, httpPort: await closedPort() });
    expect(out.ok === false && out.problem.type).toBe('connection');
    expect(out.ok === false && out.problem.detail).toMatch(/Connection refused/);
  });

  it('reports a name that does not exist as dns', async () => {
    setup();
    const out = await check(cfg, 'missing.example.test');
    expect(out).toEqual({
      ok: false,
      problem: { type: 'dns', detail: 'NXDOMAIN looking up A for missing.example.test' },
    });
  });

  it('falls back from a failing IPv6 address to IPv4', async () => {
    setup({ [PATH]: (_req, res) => res.end(KEY_AUTH) });
    // The server listens on 127.0.0.1 only, so ::1 is refused (or unreachable without IPv6).
    dns.setAaaa(NAME, '::1');
    const out = await check();
    expect(out).toEqual({ ok: true, addressesUsed: ['::1', '127.0.0.1'] });
  });

  it('follows a chain of relative, cross-host and https redirects', async () => {
    setup({
      [PATH]: redirect('/step/1', 301),
      '/step/1': redirect(`http://other.example.test:${httpPort}/step/2`, 307),
      '/step/2': redirect(`https://${NAME}:${httpsPort}/step/3`, 308),
      '/step/3': (_req, res) => res.end(KEY_AUTH),
    });
    const out = await check();
    expect(out.ok).toBe(true);
    expect(seen.map((s) => [s.host, s.path, s.tls])).toEqual([
      [`${NAME}:${httpPort}`, PATH, false],
      [`${NAME}:${httpPort}`, '/step/1', false],
      [`other.example.test:${httpPort}`, '/step/2', false],
      [`${NAME}:${httpsPort}`, '/step/3', true],
    ]);
  });

  it('follows exactly maxRedirects redirects but not one more', async () => {
    const chain: Record<string, Handler> = { [PATH]: redirect('/hop/1') };
    for (let i = 1; i <= 10; i++) chain[`/hop/${i}`] = redirect(`/hop/${i + 1}`);
    chain['/hop/11'] = (_req, res) => res.end(KEY_AUTH);
    setup(chain);
    const tooMany = await check();
    expect(tooMany.ok === false && tooMany.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/Too many redirects/),
    });
    chain['/hop/10'] = (_req, res) => res.end(KEY_AUTH);
    setup(chain);
    expect((await check()).ok).toBe(true);
  });

  it('refuses a redirect loop', async () => {
    setup({ [PATH]: redirect('/loop/a'), '/loop/a': redirect('/loop/b'), '/loop/b': redirect('/loop/a') });
    const out = await check();
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/Redirect loop/),
    });
    expect(seen).toHaveLength(3);
  });

  it('refuses redirects to other ports and schemes', async () => {
    setup({ [PATH]: redirect(`http://${NAME}:8080/x`) });
    let out = await check();
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/port 8080/),
    });
    setup({ [PATH]: redirect(`https://${NAME}:${httpPort}/x`) });
    out = await check();
    expect(out.ok === false && out.problem.type).toBe('connection');
    setup({ [PATH]: redirect(`ftp://${NAME}/x`) });
    out = await check();
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/scheme "ftp"/),
    });
    // Only the first request of each check was made; no redirect was followed.
    expect(seen.map((s) => s.path)).toEqual([PATH, PATH, PATH]);
  });

  it('does not follow a 303', async () => {
    setup({ [PATH]: redirect('/elsewhere', 303), '/elsewhere': (_req, res) => res.end(KEY_AUTH) });
    const out = await check();
    expect(out.ok === false && out.problem.type).toBe('unauthorized');
    expect(out.ok === false && out.problem.detail).toMatch(/: 303$/);
  });

  it('refuses an oversized body, declared or streamed', async () => {
    const big = KEY_AUTH + ' '.repeat(10 * 1024);
    setup({ [PATH]: (_req, res) => res.end(big) });
    let out = await check();
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringMatching(/larger than 8192/),
    });
    setup({
      [PATH]: (_req, res) => {
        res.writeHead(200); // chunked: no Content-Length to go by
        for (let i = 0; i < 20; i++) res.write('y'.repeat(1024));
        res.end();
      },
    });
    out = await check();
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringMatching(/larger than/),
    });
  });

  it('times out on a server that never answers', async () => {
    setup({ [PATH]: () => undefined });
    const started = Date.now();
    const out = await check({ ...cfg, timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/Timeout after connect/),
    });
  });

  it('refuses wildcards and malformed tokens before touching the network', async () => {
    setup();
    const wild = await checkHttp01({ type: 'dns', value: `*.${NAME}` }, TOKEN, KEY_AUTH, cfg, resolver);
    expect(wild.ok === false && wild.problem.type).toBe('malformed');
    const tok = await checkHttp01({ type: 'dns', value: NAME }, '../../etc/passwd', KEY_AUTH, cfg, resolver);
    expect(tok.ok === false && tok.problem.type).toBe('malformed');
    expect(seen).toHaveLength(0);
  });
});
