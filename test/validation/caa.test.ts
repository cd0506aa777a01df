import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  type CaaCheckOptions,
  checkCaa,
  createDnsResolver,
  type DnsResolver,
  parseIssueValue,
} from '../../src/validation/index.ts';
import { startTestDnsServer, type TestCaaRecord, type TestDnsServer } from '../support/dns-server.ts';

const CA = 'ca.keyward.test';
const ACCOUNT = 'https://acme.keyward.test/acme/acct/42';

let dns: TestDnsServer;
let resolver: DnsResolver;

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = createDnsResolver({ server: dns.address, timeoutMs: 2_000 });
});
afterAll(() => dns.close());
afterEach(() => dns.clear());

const issue = (value: string, flags = 0): TestCaaRecord => ({ flags, tag: 'issue', value });
const issuewild = (value: string, flags = 0): TestCaaRecord => ({ flags, tag: 'issuewild', value });

function caa(name: string, opts: Partial<CaaCheckOptions> = {}) {
  return checkCaa(
    { type: 'dns', value: name },
    { caIdentities: [CA], accountUri: ACCOUNT, method: 'http-01', wildcard: false, ...opts },
    resolver,
  );
}

async function allowed(name: string, opts: Partial<CaaCheckOptions> = {}): Promise<boolean> {
  const out = await caa(name, opts);
  if (!out.ok && out.problem.type !== 'caa') throw new Error(`unexpected ${out.problem.type}: ${out.problem.detail}`);
  return out.ok;
}

describe('CAA', () => {
  it('allows issuance when no CAA record exists anywhere, even for names that do not exist', async () => {
    dns.setA('www.example.test', '127.0.0.1');
    expect(await allowed('www.example.test')).toBe(true);
    expect(await allowed('nothing.here.test')).toBe(true);
  });

  it('allows issuance for our identity, case-insensitively, and refuses other CAs', async () => {
    dns.setCaa('example.test', [issue('CA.Keyward.Test')]);
    expect(await allowed('example.test')).toBe(true);
    dns.setCaa('example.test', [issue('letsencrypt.org')]);
    const out = await caa('example.test');
    expect(out).toEqual({
      ok: false,
      problem: { type: 'caa', detail: expect.stringMatching(/^CAA record for example\.test prevents issuance/) },
    });
  });

  it('treats CAA authorizations as additive', async () => {
    dns.setCaa('example.test', [issue('letsencrypt.org'), issue(`${CA}; foo=bar`)]);
    expect(await allowed('example.test')).toBe(true);
  });

  it('refuses for an empty issuer and for malformed values', async () => {
    dns.setCaa('example.test', [issue(';')]);
    expect(await allowed('example.test')).toBe(false);
    dns.setCaa('example.test', [issue('%%%%%')]);
    expect(await allowed('example.test')).toBe(false);
    dns.setCaa('example.test', [issue(`${CA}; accounturi`)]);
    expect(await allowed('example.test')).toBe(false);
  });

  it('ignores records that are neither issue nor issuewild', async () => {
    dns.setCaa('example.test', [{ flags: 0, tag: 'iodef', value: 'mailto:sec@example.test' }]);
    expect(await allowed('example.test')).toBe(true);
  });

  it('uses issuewild for wildcards and ignores it otherwise', async () => {
    dns.setCaa('example.test', [issue(CA), issuewild(';')]);
    expect(await allowed('example.test')).toBe(true);
    expect(await allowed('*.example.test', { method: 'dns-01' })).toBe(false);

    dns.setCaa('example.test', [issue(';'), issuewild(CA)]);
    expect(await allowed('example.test')).toBe(false);
    expect(await allowed('*.example.test', { method: 'dns-01' })).toBe(true);
    // The wildcard flag alone (value without "*.") selects issuewild as well.
    expect(await allowed('example.test', { wildcard: true })).toBe(true);
  });

  it('falls back to issue for wildcards when there is no issuewild', async () => {
    dns.setCaa('example.test', [issue(CA)]);
    expect(await allowed('*.example.test', { method: 'dns-01' })).toBe(true);
  });

  it('binds to an account with accounturi (RFC 8657 §3)', async () => {
    dns.setCaa('example.test', [issue(`${CA}; accounturi=${ACCOUNT}`)]);
    expect(await allowed('example.test')).toBe(true);
    expect(await allowed('example.test', { accountUri: `${ACCOUNT}0` })).toBe(false);
    dns.setCaa('example.test', [issue(`${CA}; accounturi=${ACCOUNT}; accounturi=${ACCOUNT}`)]);
    expect(await allowed('example.test')).toBe(false);
  });

  it('binds to validation methods with validationmethods (RFC 8657 §4)', async () => {
    dns.setCaa('example.test', [issue(`${CA}; validationmethods=dns-01`)]);
    expect(await allowed('example.test', { method: 'dns-01' })).toBe(true);
    expect(await allowed('example.test', { method: 'http-01' })).toBe(false);
    dns.setCaa('example.test', [issue(`${CA}; validationmethods=dns-01,tls-alpn-01 ; accounturi=${ACCOUNT}`)]);
    expect(await allowed('example.test', { method: 'tls-alpn-01' })).toBe(true);
    expect(await allowed('example.test', { method: 'tls-alpn-01', accountUri: 'https://other/acct/1' })).toBe(false);
    dns.setCaa('example.test', [issue(`${CA}; validationmethods=dns-01,,http-01`)]);
    expect(await allowed('example.test', { method: 'http-01' })).toBe(false);
  });

  it('refuses when an unknown property is marked critical', async () => {
    dns.setCaa('example.test', [issue(CA), { flags: 128, tag: 'tbs', value: 'Unknown' }]);
    const out = await caa('example.test');
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'caa',
      detail: expect.stringMatching(/unknown critical property "tbs"/),
    });
    dns.setCaa('example.test', [issue(CA), { flags: 0, tag: 'tbs', value: 'Unknown' }]);
    expect(await allowed('example.test')).toBe(true);
    dns.setCaa('example.test', [issue(CA, 128)]);
    expect(await allowed('example.test')).toBe(true);
  });

  it('climbs to the closest ancestor that has CAA records', async () => {
    dns.setA('a.b.example.test', '127.0.0.1');
    dns.setCaa('example.test', [issue('letsencrypt.org')]);
    expect(await allowed('a.b.example.test')).toBe(false);
    dns.setCaa('b.example.test', [issue(CA)]);
    expect(await allowed('a.b.example.test')).toBe(true);
    dns.setCaa('a.b.example.test', [issue(';')]);
    expect(await allowed('a.b.example.test')).toBe(false);
  });

  it('follows a CNAME at the name to the target CAA set', async () => {
    dns.setCname('alias.example.test', 'target.example.net');
    dns.setCaa('target.example.net', [issue('letsencrypt.org')]);
    dns.setCaa('example.test', [issue(CA)]);
    expect(await allowed('alias.example.test')).toBe(false);
  });

  it('fails closed on DNS errors below the relevant set, but not above it', async () => {
    dns.setCaa('example.test', [issue(CA)]);
    dns.fail('www.example.test', 'SERVFAIL', 'CAA');
    expect(await caa('www.example.test')).toEqual({
      ok: false,
      problem: { type: 'dns', detail: 'SERVFAIL looking up CAA for www.example.test' },
    });
    dns.fail('www.example.test', null, 'CAA');
    dns.fail('test', 'SERVFAIL');
    expect(await allowed('www.example.test')).toBe(true);
  });

  it('skips IP identifiers', async () => {
    const out = await checkCaa(
      { type: 'ip', value: '127.0.0.1' },
      { caIdentities: [CA], accountUri: ACCOUNT, method: 'http-01', wildcard: false },
      resolver,
    );
    expect(out).toEqual({ ok: true });
    expect(dns.queries()).toEqual([]);
  });
});

describe('parseIssueValue (RFC 8659 §4.2 grammar)', () => {
  it.each([
    ['ca.example', { issuer: 'ca.example', parameters: [] }],
    ['  Ca.Example  ', { issuer: 'ca.example', parameters: [] }],
    [';', { issuer: null, parameters: [] }],
    ['', { issuer: null, parameters: [] }],
    [
      'ca.example; a=1;b = 2',
      {
        issuer: 'ca.example',
        parameters: [
          ['a', '1'],
          ['b', '2'],
        ],
      },
    ],
    ['ca.example;AccountURI=https://x/1', { issuer: 'ca.example', parameters: [['accounturi', 'https://x/1']] }],
    ['ca.example; a=', { issuer: 'ca.example', parameters: [['a', '']] }],
  ])('parses %j', (value, expected) => {
    expect(parseIssueValue(value)).toEqual(expected);
  });

  it.each([
    '%%%%%',
    'ca.example.',
    'ca..example',
    '-ca.example',
    'ca.example a=1',
    'ca.example; a',
    'ca.example; a=1;',
    'ca.example; a=x y',
    'ca.example;;',
  ])('refuses %j', (value) => {
    expect(parseIssueValue(value)).toBeNull();
  });
});
