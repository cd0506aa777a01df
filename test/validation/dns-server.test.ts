import { promises as nodeDns } from 'node:dns';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';

// The test DNS server is shared with other suites; these pin the behaviour they rely on, using
// node's resolver directly so they do not depend on src/validation.
let dns: TestDnsServer;
let r: nodeDns.Resolver;

beforeAll(async () => {
  dns = await startTestDnsServer();
  r = new nodeDns.Resolver({ timeout: 500, tries: 1 });
  r.setServers([dns.address]);
});
afterAll(() => dns.close());
afterEach(() => dns.clear());

const code = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: NodeJS.ErrnoException) => e.code,
  );

describe('test DNS server', () => {
  it('listens on 127.0.0.1 with a random port', () => {
    expect(dns.address).toBe(`127.0.0.1:${dns.port}`);
    expect(dns.port).toBeGreaterThan(0);
  });

  it('answers records case-insensitively, with NXDOMAIN and NODATA kept apart', async () => {
    dns.setA('Host.Example.Test.', ['127.0.0.1', '127.0.0.2']);
    expect(await r.resolve4('host.example.test')).toEqual(['127.0.0.1', '127.0.0.2']);
    expect(await code(r.resolveTxt('host.example.test'))).toBe(nodeDns.NODATA);
    expect(await code(r.resolve4('example.test'))).toBe(nodeDns.NODATA); // empty non-terminal
    expect(await code(r.resolve4('unknown.test'))).toBe(nodeDns.NOTFOUND);
  });

  it('serves CNAME chains like a recursive resolver', async () => {
    dns.setCname('a.example.test', 'b.example.test');
    dns.setCname('b.example.test', 'c.example.test');
    dns.setTxt('c.example.test', ['v']);
    expect(await r.resolveTxt('a.example.test')).toEqual([['v']]);
    expect(await r.resolveCname('a.example.test')).toEqual(['b.example.test']);
  });

  it('fails names on demand, per type, and heals them', async () => {
    dns.setA('f.example.test', '127.0.0.1');
    dns.fail('f.example.test', 'SERVFAIL', 'TXT');
    expect(await code(r.resolveTxt('f.example.test'))).toBe(nodeDns.SERVFAIL);
    expect(await r.resolve4('f.example.test')).toEqual(['127.0.0.1']);
    dns.fail('f.example.test', 'REFUSED');
    expect(await code(r.resolve4('f.example.test'))).toBe(nodeDns.REFUSED);
    dns.fail('f.example.test', null);
    dns.fail('f.example.test', null, 'TXT');
    expect(await code(r.resolveTxt('f.example.test'))).toBe(nodeDns.NODATA);
  });

  it('forgets a single name, and logs queries', async () => {
    dns.setA('x.example.test', '127.0.0.1');
    dns.setA('y.example.test', '127.0.0.1');
    dns.clear('x.example.test');
    expect(await code(r.resolve4('x.example.test'))).toBe(nodeDns.NOTFOUND);
    expect(await r.resolve4('y.example.test')).toEqual(['127.0.0.1']);
    expect(dns.queries()).toEqual([
      { name: 'x.example.test', type: 'A', transport: 'udp' },
      { name: 'y.example.test', type: 'A', transport: 'udp' },
    ]);
  });
});
