import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  challengeKindsFor,
  createDnsResolver,
  dns01Digest,
  type DnsResolver,
  validateChallenge,
} from '../../src/validation/index.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { testConfig } from './helpers.ts';

let dns: TestDnsServer;
let resolver: DnsResolver;

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = createDnsResolver({ server: dns.address, timeoutMs: 2_000 });
});
afterAll(() => dns.close());

describe('validateChallenge', () => {
  it('offers DNS-only challenges for wildcards and no dns-01 for IPs', () => {
    expect(challengeKindsFor({ type: 'dns', value: 'a.example.test' })).toEqual(['http-01', 'dns-01', 'tls-alpn-01']);
    expect(challengeKindsFor({ type: 'dns', value: '*.example.test' })).toEqual(['dns-01']);
    expect(challengeKindsFor({ type: 'ip', value: '192.0.2.1' })).toEqual(['http-01', 'tls-alpn-01']);
  });

  it('refuses a challenge kind the identifier cannot use', async () => {
    const cfg = testConfig({ dnsResolver: dns.address });
    const wild = await validateChallenge(
      'http-01',
      { type: 'dns', value: '*.example.test' },
      'tok',
      'tok.x',
      cfg,
      resolver,
    );
    expect(wild).toEqual({
      ok: false,
      problem: { type: 'malformed', detail: 'http-01 cannot validate dns identifier *.example.test' },
    });
    const ip = await validateChallenge('dns-01', { type: 'ip', value: '192.0.2.1' }, 'tok', 'tok.x', cfg, resolver);
    expect(ip.ok === false && ip.problem.type).toBe('malformed');
  });

  it('refuses malformed identifiers', async () => {
    const cfg = testConfig({ dnsResolver: dns.address });
    for (const value of ['no_underscores.example.test', 'single', 'a..b.test', `${'x'.repeat(64)}.test`]) {
      const out = await validateChallenge('dns-01', { type: 'dns', value }, 'tok', 'tok.x', cfg, resolver);
      expect(out.ok === false && out.problem.type, value).toBe('malformed');
    }
    const ip = await validateChallenge('http-01', { type: 'ip', value: '300.1.1.1' }, 'tok', 'tok.x', cfg, resolver);
    expect(ip.ok === false && ip.problem.type).toBe('malformed');
  });

  it('runs dns-01 for a wildcard', async () => {
    dns.setTxt('_acme-challenge.example.test', [dns01Digest('tok.x')]);
    const out = await validateChallenge(
      'dns-01',
      { type: 'dns', value: '*.example.test' },
      'tok',
      'tok.x',
      testConfig(),
      resolver,
    );
    expect(out).toEqual({ ok: true });
  });
});
