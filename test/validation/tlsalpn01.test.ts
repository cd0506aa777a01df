import 'reflect-metadata';

import { createHash } from 'node:crypto';
import tls from 'node:tls';

import * as x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { AcmeIdentifier } from '../../src/core/identifiers.ts';
import {
  ACME_IDENTIFIER_OID,
  createDnsResolver,
  type DnsResolver,
  reverseDnsName,
  validateChallenge,
  type ValidationConfig,
} from '../../src/validation/index.ts';
import { checkTlsAlpn01 } from '../../src/validation/tlsalpn01.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { closedPort, closeServer, listen, selfSignedCert, type TestCert, testConfig } from './helpers.ts';

const NAME = 'tls.example.test';
const KEY_AUTH = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI';

let dns: TestDnsServer;
let resolver: DnsResolver;
let servers: tls.Server[] = [];
const hellos: { servername: string; alpn: string }[] = [];

beforeAll(async () => {
  dns = await startTestDnsServer();
  resolver = createDnsResolver({ server: dns.address, timeoutMs: 2_000 });
});
afterAll(() => dns.close());
afterEach(async () => {
  await Promise.all(servers.map(closeServer));
  servers = [];
  hellos.length = 0;
  dns.clear();
});

function acmeIdentifier(keyAuth: string, critical = true): x509.Extension {
  const digest = createHash('sha256').update(keyAuth).digest();
  const der = new asn1js.OctetString({ valueHex: digest }).toBER(false);
  return new x509.Extension(ACME_IDENTIFIER_OID, critical, der);
}

function validationCert(opts: {
  sans?: { type: 'dns' | 'ip'; value: string }[];
  keyAuth?: string;
  critical?: boolean;
  withExtension?: boolean;
}): Promise<TestCert> {
  return selfSignedCert({
    sans: opts.sans ?? [{ type: 'dns', value: NAME }],
    extensions: opts.withExtension === false ? [] : [acmeIdentifier(opts.keyAuth ?? KEY_AUTH, opts.critical ?? true)],
  });
}

/**
 * A responder on 127.0.0.1; `alpn: null` makes it a server that does not speak ALPN at all. The
 * ClientHello is logged from the ALPN callback because that runs before the server answers, while
 * 'secureConnection' may come after the client has already hung up.
 */
async function responder(cert: TestCert, alpn: string[] | null = ['acme-tls/1']): Promise<number> {
  const server = tls.createServer({
    cert: cert.certPem,
    key: cert.keyPem,
    ...(alpn
      ? {
          ALPNCallback: ({ servername, protocols }: { servername: string; protocols: string[] }) => {
            hellos.push({ servername, alpn: protocols.join(',') });
            return alpn.find((p) => protocols.includes(p));
          },
        }
      : {}),
  });
  server.on('secureConnection', (s) => {
    s.on('error', () => undefined);
    s.end();
  });
  server.on('tlsClientError', () => undefined);
  servers.push(server);
  return listen(server);
}

async function check(
  cert: TestCert,
  opts: { id?: AcmeIdentifier; alpn?: string[] | null; cfg?: Partial<ValidationConfig> } = {},
) {
  dns.setA(NAME, '127.0.0.1');
  const port = await responder(cert, opts.alpn === undefined ? ['acme-tls/1'] : opts.alpn);
  const cfg = testConfig({ tlsAlpnPort: port, dnsResolver: dns.address, ...opts.cfg });
  return checkTlsAlpn01(opts.id ?? { type: 'dns', value: NAME }, KEY_AUTH, cfg, resolver);
}

describe('tls-alpn-01', () => {
  it('accepts a correct validation certificate, sending SNI = name and ALPN acme-tls/1', async () => {
    const out = await check(await validationCert({}));
    expect(out).toEqual({ ok: true, addressesUsed: ['127.0.0.1'] });
    expect(hellos).toEqual([{ servername: NAME, alpn: 'acme-tls/1' }]);
  });

  it('validates an IP identifier with the reverse name as SNI and an iPAddress SAN', async () => {
    const cert = await validationCert({ sans: [{ type: 'ip', value: '127.0.0.1' }] });
    const out = await check(cert, { id: { type: 'ip', value: '127.0.0.1' } });
    expect(out.ok).toBe(true);
    expect(hellos[0]?.servername).toBe('1.0.0.127.in-addr.arpa');
    expect(reverseDnsName('2001:db8::1')).toBe(
      '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
    );
  });

  it('goes through validateChallenge', async () => {
    dns.setA(NAME, '127.0.0.1');
    const port = await responder(await validationCert({}));
    const cfg = testConfig({ tlsAlpnPort: port, dnsResolver: dns.address });
    const out = await validateChallenge('tls-alpn-01', { type: 'dns', value: NAME }, 'tok', KEY_AUTH, cfg, resolver);
    expect(out.ok).toBe(true);
  });

  it('rejects a wrong digest', async () => {
    const out = await check(await validationCert({ keyAuth: `${KEY_AUTH}x` }));
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringMatching(/acmeIdentifier extension value does not match/),
    });
  });

  it('rejects a non-critical acmeIdentifier extension', async () => {
    const out = await check(await validationCert({ critical: false }));
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringMatching(/not critical/),
    });
  });

  it('rejects a certificate without the acmeIdentifier extension', async () => {
    const out = await check(await validationCert({ withExtension: false }));
    expect(out.ok === false && out.problem.type).toBe('unauthorized');
  });

  it('rejects an extra SAN', async () => {
    const cert = await validationCert({
      sans: [
        { type: 'dns', value: NAME },
        { type: 'dns', value: 'extra.example.test' },
      ],
    });
    const out = await check(cert);
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'incorrectResponse',
      detail: expect.stringContaining(`requested ${NAME}, certificate names ${NAME}, extra.example.test`),
    });
  });

  it('rejects a SAN for another name', async () => {
    const out = await check(await validationCert({ sans: [{ type: 'dns', value: 'other.example.test' }] }));
    expect(out.ok === false && out.problem.type).toBe('incorrectResponse');
  });

  it('requires acme-tls/1 to be negotiated', async () => {
    const cert = await validationCert({});
    const noAlpn = await check(cert, { alpn: null });
    expect(noAlpn.ok === false && noAlpn.problem).toMatchObject({
      type: 'tls',
      detail: expect.stringMatching(/Cannot negotiate ALPN/),
    });
    const otherAlpn = await check(cert, { alpn: ['h2'] });
    expect(otherAlpn.ok === false && otherAlpn.problem.type).toBe('tls');
  });

  it('reports a refused connection', async () => {
    dns.setA(NAME, '127.0.0.1');
    const cfg = testConfig({ tlsAlpnPort: await closedPort(), dnsResolver: dns.address });
    const out = await checkTlsAlpn01({ type: 'dns', value: NAME }, KEY_AUTH, cfg, resolver);
    expect(out.ok === false && out.problem).toMatchObject({
      type: 'connection',
      detail: expect.stringMatching(/Connection refused/),
    });
  });

  it('refuses wildcard identifiers', async () => {
    const out = await checkTlsAlpn01({ type: 'dns', value: `*.${NAME}` }, KEY_AUTH, testConfig(), resolver);
    expect(out.ok === false && out.problem.type).toBe('malformed');
  });
});
