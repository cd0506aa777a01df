import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { checkDns01 } from '../../src/validation/dns01.ts';
import { createDnsResolver, dns01Digest, type DnsResolver, validateChallenge } from '../../src/validation/index.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { testConfig } from './helpers.ts';

const KEY_AUTH = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI';
const DIGEST = dns01Digest(KEY_AUTH);

let dns: TestDnsServer;
let resolver: DnsResolver;
const cfg = testConfig({ timeoutMs: 2_000 });

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = createDnsResolver({ server: dns.address, timeoutMs: 2_000 });
});
afterAll(() => dns.close());
afterEach(() => dns.clear());

const check = (name: string) => checkDns01({ type: 'dns', value: name }, KEY_AUTH, cfg, resolver);

describe('dns-01', () => {
  it('computes the digest as unpadded base64url SHA-256', () => {
    expect(DIGEST).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('accepts a matching TXT record among others', async () => {
    dns.setTxt('_acme-challenge.a.example.test', ['unrelated', DIGEST]);
    expect(await check('a.example.test')).toEqual({ ok: true });
  });

  it('joins multi-string TXT records before comparing', async () => {
    dns.setTxt('_acme-challenge.a.example.test', [[DIGEST.slice(0, 20), DIGEST.slice(20)]]);
    expect(await check('a.example.test')).toEqual({ ok: true });
  });

  it('strips the wildcard label', async () => {
    dns.setTxt('_acme-challenge.a.example.test', [DIGEST]);
    expect(await check('*.a.example.test')).toEqual({ ok: true });
    expect(dns.queries().map((q) => q.name)).toEqual(['_acme-challenge.a.example.test']);
  });

  it('follows a CNAME to a delegated validation zone', async () => {
    dns.setCname('_acme-challenge.a.example.test', 'a.validation.example.net');
    dns.setTxt('a.validation.example.net', [DIGEST]);
    expect(await check('a.example.test')).toEqual({ ok: true });
  });

  it('rejects a wrong value as incorrectResponse', async () => {
    dns.setTxt('_acme-challenge.a.example.test', [KEY_AUTH]);
    const out = await check('a.example.test');
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringContaining('Incorrect TXT record'),
    });
  });

  it('reports a name without TXT records as unauthorized', async () => {
    dns.setA('_acme-challenge.a.example.test', '127.0.0.1');
    expect(await check('a.example.test')).toEqual({
      ok: false,
      problem: { type: 'unauthorized', detail: 'No TXT record found at _acme-challenge.a.example.test' },
    });
  });

  it('reports NXDOMAIN as dns', async () => {
    expect(await check('example.test')).toEqual({
      ok: false,
      problem: { type: 'dns', detail: 'NXDOMAIN looking up TXT for _acme-challenge.example.test' },
    });
  });

  it('reports SERVFAIL as dns', async () => {
    dns.setTxt('_acme-challenge.a.example.test', [DIGEST]);
    dns.fail('_acme-challenge.a.example.test', 'SERVFAIL');
    expect(await check('a.example.test')).toEqual({
      ok: false,
      problem: { type: 'dns', detail: 'SERVFAIL looking up TXT for _acme-challenge.a.example.test' },
    });
  });

  it('reports an unanswered query as a dns timeout within the configured bound', async () => {
    dns.fail('_acme-challenge.a.example.test', 'TIMEOUT');
    const quick = createDnsResolver({ server: dns.address, timeoutMs: 300 });
    const started = Date.now();
    const out = await checkDns01(
      { type: 'dns', value: 'a.example.test' },
      KEY_AUTH,
      testConfig({ timeoutMs: 300 }),
      quick,
    );
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(out).toEqual({
      ok: false,
      problem: { type: 'dns', detail: 'Timeout looking up TXT for _acme-challenge.a.example.test' },
    });
  });

  it('cannot validate IP identifiers', async () => {
    const out = await validateChallenge('dns-01', { type: 'ip', value: '127.0.0.1' }, 'tok', KEY_AUTH, cfg, resolver);
    expect(out.ok === false && out.problem.type).toBe('malformed');
  });
});
