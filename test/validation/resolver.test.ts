import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { createDnsResolver, DnsLookupError, type DnsResolver, resolverForConfig } from '../../src/validation/index.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { testConfig } from './helpers.ts';

let dns: TestDnsServer;
let resolver: DnsResolver;

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = resolverForConfig(testConfig({ dnsResolver: dns.address, timeoutMs: 2_000 }));
});
afterAll(() => dns.close());
afterEach(() => dns.clear());

async function lookupError(p: Promise<unknown>): Promise<DnsLookupError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof DnsLookupError)) throw new Error(`expected DnsLookupError, got ${String(err)}`);
  return err;
}

describe('DNS resolver', () => {
  it('queries the configured server on its non-standard port', async () => {
    dns.setA('h.example.test', ['127.0.0.1', '::1']);
    expect(dns.port).not.toBe(53);
    expect(await resolver.resolveA('h.example.test')).toEqual(['127.0.0.1']);
    expect(await resolver.resolveAAAA('h.example.test')).toEqual(['::1']);
  });

  it('never consults /etc/hosts', async () => {
    const err = await lookupError(resolver.resolveA('localhost'));
    expect(err.kind).toBe('NXDOMAIN');
    expect(err.message).toBe('NXDOMAIN looking up A for localhost');
  });

  it('returns [] for a name without records of the type, including empty non-terminals', async () => {
    dns.setA('deep.h.example.test', '127.0.0.1');
    expect(await resolver.resolveTxt('deep.h.example.test')).toEqual([]);
    expect(await resolver.resolveCaa('h.example.test')).toEqual([]);
  });

  it('retries large answers over TCP', async () => {
    const values = Array.from({ length: 12 }, (_, i) => `${i}-${'v'.repeat(200)}`);
    dns.setTxt('big.example.test', values);
    const got = await resolver.resolveTxt('big.example.test');
    expect(got.map((r) => r.join(''))).toEqual(values);
    expect(dns.queries().map((q) => q.transport)).toContain('tcp');
  });

  it('returns CAA flags and tags, unknown tags included', async () => {
    dns.setCaa('example.test', [
      { flags: 0, tag: 'issue', value: 'ca.example.test; accounturi=https://ca/acct/1' },
      { flags: 128, tag: 'TBS', value: 'x' },
    ]);
    expect(await resolver.resolveCaa('example.test')).toEqual([
      { flags: 0, tag: 'issue', value: 'ca.example.test; accounturi=https://ca/acct/1' },
      { flags: 128, tag: 'tbs', value: 'x' },
    ]);
  });

  it('keeps a CAA answer for its TTL, asking the server once', async () => {
    const issue = (value: string) => [{ flags: 0, tag: 'issue', value }];
    dns.setCaa('kept.example.test', issue('first.example'), 2);
    expect(await resolver.resolveCaa('kept.example.test')).toEqual(issue('first.example'));
    dns.setCaa('kept.example.test', issue('second.example'), 2);
    expect(await resolver.resolveCaa('kept.example.test')).toEqual(issue('first.example'));
    expect(dns.queries().filter((q) => q.name === 'kept.example.test' && q.type === 'CAA')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 2_100));
    expect(await resolver.resolveCaa('kept.example.test')).toEqual(issue('second.example'));
  });

  it('does not keep a CAA answer with TTL 0, nor an empty one without the zone SOA', async () => {
    dns.setCaa('fresh.example.test', [{ flags: 0, tag: 'issue', value: 'a.example' }]);
    await resolver.resolveCaa('fresh.example.test');
    dns.setCaa('fresh.example.test', [{ flags: 0, tag: 'issue', value: 'b.example' }]);
    expect(await resolver.resolveCaa('fresh.example.test')).toEqual([{ flags: 0, tag: 'issue', value: 'b.example' }]);
    dns.setA('empty.example.test', '127.0.0.1');
    expect(await resolver.resolveCaa('empty.example.test')).toEqual([]);
    dns.setCaa('empty.example.test', [{ flags: 0, tag: 'issue', value: 'c.example' }]);
    expect(await resolver.resolveCaa('empty.example.test')).toHaveLength(1);
  });

  it('keeps an empty CAA answer for the SOA minimum the server sends with it', async () => {
    dns.setNegativeTtl(2);
    try {
      dns.setA('negative.example.test', '127.0.0.1');
      expect(await resolver.resolveCaa('negative.example.test')).toEqual([]);
      dns.setCaa('negative.example.test', [{ flags: 0, tag: 'issue', value: 'late.example' }]);
      expect(await resolver.resolveCaa('negative.example.test')).toEqual([]);
      await new Promise((r) => setTimeout(r, 2_100));
      expect(await resolver.resolveCaa('negative.example.test')).toHaveLength(1);
    } finally {
      dns.setNegativeTtl(0);
    }
  });

  it('asks for a truncated CAA answer again over TCP', async () => {
    const many = Array.from({ length: 12 }, (_, i) => ({
      flags: 0,
      tag: 'issue',
      value: `${i}-${'c'.repeat(120)}.example`,
    }));
    dns.setCaa('bigcaa.example.test', many);
    expect(await resolver.resolveCaa('bigcaa.example.test')).toEqual(many);
    expect(
      dns
        .queries()
        .filter((q) => q.name === 'bigcaa.example.test')
        .map((q) => q.transport),
    ).toContain('tcp');
  });

  it('maps SERVFAIL and REFUSED', async () => {
    dns.fail('bad.example.test', 'SERVFAIL');
    dns.fail('no.example.test', 'REFUSED');
    expect((await lookupError(resolver.resolveCaa('bad.example.test'))).message).toBe(
      'SERVFAIL looking up CAA for bad.example.test',
    );
    expect((await lookupError(resolver.resolveTxt('no.example.test'))).kind).toBe('REFUSED');
  });

  it('bounds a query by its timeout', async () => {
    dns.fail('slow.example.test', 'TIMEOUT');
    const quick = createDnsResolver({ server: dns.address, timeoutMs: 200 });
    const started = Date.now();
    const err = await lookupError(quick.resolveTxt('slow.example.test'));
    expect(err.kind).toBe('TIMEOUT');
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('rejects an unusable server setting up front', () => {
    expect(() => createDnsResolver({ server: 'dns.example.test:53' })).toThrow(/dnsResolver/);
  });
});
