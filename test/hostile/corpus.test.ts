import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  type AcmeTestEnv,
  internals,
  publish,
  rawKey,
  request,
  resolveToLoopback,
  signedPost,
  signJws,
  startAcmeEnv,
} from '../support/acme.ts';

const ACME = 'urn:ietf:params:acme:error:';
const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/**
 * Hostile inputs from the red team's corpus: each answer must be a 4xx problem document of the
 * right type (never a 5xx, never a raw stack or a text/plain error), and nothing may change in the
 * database.
 */
describe('hostile inputs', () => {
  let env: AcmeTestEnv;
  let base: string;

  const counts = async () => {
    const db = env.ca.ctx.database.db;
    const n = async (t: 'acme_accounts' | 'acme_orders' | 'certificates' | 'serial_reservations' | 'acme_authzs') =>
      Number((await db.selectFrom(t).select(db.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n);
    return {
      accounts: await n('acme_accounts'),
      orders: await n('acme_orders'),
      authzs: await n('acme_authzs'),
      certificates: await n('certificates'),
      reservations: await n('serial_reservations'),
    };
  };

  const expectProblem = (res: { status: number; headers: Record<string, unknown>; body: string }, type: string) => {
    expect(res.status, res.body).toBeGreaterThanOrEqual(400);
    expect(res.status, res.body).toBeLessThan(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ type: `${ACME}${type}` });
    expect(res.body).not.toMatch(/\bat .*\.(ts|js):\d+/);
  };

  beforeAll(async () => {
    env = await startAcmeEnv();
    base = `${env.ca.httpsUrl}/acme`;
  });
  afterAll(async () => env?.close());

  it('JWS: malformed envelopes, algorithms, keys and signatures', async () => {
    const key = await rawKey();
    const url = `${base}/new-account`;
    const nonce = async () => (await request(env, 'HEAD', `${base}/new-nonce`)).headers['replay-nonce'] as string;
    const good = async (header: Record<string, unknown> = {}, payload: unknown = { termsOfServiceAgreed: true }) =>
      signJws(key, payload, { alg: 'ES256', nonce: await nonce(), url, jwk: key.jwk, ...header });
    const post = (body: string, type = 'application/jose+json') =>
      request(env, 'POST', url, { headers: { 'content-type': type }, body });
    const before = await counts();
    const cases: [string, () => Promise<string>, string, string?][] = [
      ['not JSON', async () => '{"protected":', 'malformed'],
      ['a JSON array', async () => '[]', 'malformed'],
      ['a JSON string', async () => '"jws"', 'malformed'],
      ['deeply nested', async () => '['.repeat(5000) + ']'.repeat(5000), 'malformed'],
      ['no protected header', async () => JSON.stringify({ payload: '', signature: '' }), 'malformed'],
      [
        'protected not base64url',
        async () => JSON.stringify({ protected: '%%%', payload: '', signature: 'AA' }),
        'malformed',
      ],
      [
        'protected not JSON',
        async () => JSON.stringify({ protected: b64('nope'), payload: '', signature: 'AA' }),
        'malformed',
      ],
      [
        'alg none',
        async () =>
          JSON.stringify({
            ...(await good()),
            protected: b64(JSON.stringify({ alg: 'none', nonce: await nonce(), url, jwk: key.jwk })),
          }),
        'badSignatureAlgorithm',
      ],
      [
        'alg HS256',
        async () =>
          JSON.stringify({
            ...(await good()),
            protected: b64(JSON.stringify({ alg: 'HS256', nonce: await nonce(), url, jwk: key.jwk })),
          }),
        'badSignatureAlgorithm',
      ],
      [
        'signature garbage',
        async () => JSON.stringify({ ...(await good()), signature: b64(Buffer.alloc(64, 1)) }),
        'malformed',
      ],
      ['signature empty', async () => JSON.stringify({ ...(await good()), signature: '' }), 'malformed'],
      ['jwk and kid both', async () => JSON.stringify(await good({ kid: `${base}/acct/x` })), 'malformed'],
      [
        'jwk with a private part',
        async () => JSON.stringify(await good({ jwk: { ...key.jwk, d: 'AAAA' } })),
        'badPublicKey',
      ],
      ['jwk of an unknown type', async () => JSON.stringify(await good({ jwk: { kty: 'XYZ' } })), 'badPublicKey'],
      ['url of another resource', async () => JSON.stringify(await good({ url: `${base}/new-order` })), 'unauthorized'],
      ['nonce not ours', async () => JSON.stringify(await good({ nonce: 'A'.repeat(50) })), 'badNonce'],
      ['nonce huge', async () => JSON.stringify(await good({ nonce: 'A'.repeat(5000) })), 'badNonce'],
      ['payload not JSON', async () => JSON.stringify(await good({}, '')), 'malformed'],
      ['wrong content type', async () => JSON.stringify(await good()), 'malformed', 'application/json'],
    ];
    for (const [name, body, type, contentType] of cases) {
      const res = await post(await body(), contentType);
      expect.soft(res.status, name).toBeLessThan(500);
      if (res.status < 500) {
        expect.soft(res.headers['content-type'], name).toBe('application/problem+json');
        const doc = JSON.parse(res.body) as { type: string };
        expect
          .soft([name, doc.type.replace(ACME, '')], res.body)
          .toEqual([
            name,
            expect.stringMatching(new RegExp(`^(${type}|malformed|unauthorized|unsupportedMediaType)$`)),
          ]);
      }
    }
    expect(await counts()).toEqual(before);
  });

  it('contacts: too long, not mailto, several addresses, malformed', async () => {
    const key = await rawKey();
    const before = await counts();
    const contacts: [string[] | unknown, string][] = [
      [[`mailto:${'a'.repeat(10_000)}@example.com`], 'invalidContact'],
      [[`mailto:a@${'b'.repeat(250)}.com`], 'invalidContact'],
      [['mailto:a@b'], 'invalidContact'],
      [['mailto:a@example.com,b@example.com'], 'invalidContact'],
      [['mailto:a@example.com?subject=x'], 'invalidContact'],
      [['tel:+1555'], 'unsupportedContact'],
      [['https://example.com'], 'unsupportedContact'],
      [Array.from({ length: 11 }, (_, i) => `mailto:a${i}@example.com`), 'invalidContact'],
      ['mailto:a@example.com', 'malformed'],
      [[42], 'malformed'],
    ];
    for (const [contact, type] of contacts) {
      const res = await signedPost(env, `${base}/new-account`, key, { termsOfServiceAgreed: true, contact });
      expectProblem(res, type);
    }
    expect(await counts()).toEqual(before);
  });

  it('identifiers: numeric TLD, bad labels, lengths, types', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const before = await counts();
    const identifiers: [unknown, string][] = [
      [[{ type: 'dns', value: 'a.123' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: '-a.example.com' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: 'a..example.com' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: `${'a'.repeat(64)}.example.com` }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: `${'a.'.repeat(130)}com` }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: 'exa mple.com' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: 'example.com.' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: '*.*.example.com' }], 'rejectedIdentifier'],
      [[{ type: 'dns', value: '' }], 'rejectedIdentifier'],
      [[{ type: 'ip', value: '999.1.1.1' }], 'rejectedIdentifier'],
      [[{ type: 'ip', value: '::ffff:zz' }], 'rejectedIdentifier'],
      [[{ type: 'email', value: 'a@example.com' }], 'unsupportedIdentifier'],
      [[{ type: 'dns' }], 'malformed'],
      [[], 'malformed'],
      ['example.com', 'malformed'],
    ];
    for (const [ids, type] of identifiers) {
      const res = await internals(client).api.apiRequest(`${base}/new-order`, { identifiers: ids });
      expect
        .soft([JSON.stringify(ids).slice(0, 60), res.status < 500 && res.status >= 400])
        .toEqual([JSON.stringify(ids).slice(0, 60), true]);
      expect
        .soft([JSON.stringify(ids).slice(0, 60), res.data.type])
        .toEqual([
          JSON.stringify(ids).slice(0, 60),
          expect.stringMatching(new RegExp(`^${ACME}(${type}|rejectedIdentifier|malformed)$`)),
        ]);
    }
    expect(await counts()).toEqual(before);
  });

  it('CSRs at finalize: garbage, PEM, other names, the account key; the order stays ready', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const name = 'hostile-csr.example.test';
    resolveToLoopback(env, name);
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
    for (const authz of await client.getAuthorizations(order)) {
      const challenge = await publish(env, client, authz, 'http-01');
      await client.completeChallenge(challenge);
      await client.waitForValidStatus(challenge);
    }
    const key = await acme.crypto.createPrivateEcdsaKey();
    const [, otherCsr] = await acme.crypto.createCsr({ altNames: ['other.example.test'] }, key);
    const [, pemCsr] = await acme.crypto.createCsr({ altNames: [name] }, key);
    const der = Buffer.from(pemCsr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const truncated = der.subarray(0, der.length - 10);
    const flipped = Buffer.from(der);
    flipped[flipped.length - 5]! ^= 0xff;
    const before = await counts();
    const csrs: [string, unknown][] = [
      ['empty', ''],
      ['not base64url', '%%%'],
      ['PEM', b64(pemCsr)],
      ['garbage', b64(Buffer.alloc(300, 0x30))],
      ['truncated', b64(truncated)],
      ['bad signature', b64(flipped)],
      ['other names', b64(Buffer.from(otherCsr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64'))],
      ['a number', 42],
      ['huge', b64(Buffer.alloc(60_000, 0x30))],
    ];
    for (const [what, csr] of csrs) {
      const res = await internals(client).api.apiRequest(order.finalize, { csr });
      expect.soft([what, res.status >= 400 && res.status < 500], JSON.stringify(res.data)).toEqual([what, true]);
      expect.soft([what, res.data.type]).toEqual([what, expect.stringMatching(/:(badCSR|malformed)$/)]);
    }
    expect(await counts()).toEqual(before);
    expect((await client.getOrder(order)).status).toBe('ready');
  });

  it('OCSP requests and ARI paths: never a 5xx, never a raw stack', async () => {
    const http = env.ca.httpUrl;
    const ocsp: [string, string, string | undefined][] = [
      ['POST', '/ocsp', 'not DER'],
      ['POST', '/ocsp', '\x30\x82\xff\xff'],
      ['POST', '/ocsp', '\x30\x03\x30\x01\x00'],
      ['POST', '/ocsp', ''],
      ['GET', '/ocsp/%%%', undefined],
      ['GET', '/ocsp/MAA=', undefined],
      ['GET', `/ocsp/${'A'.repeat(4000)}`, undefined],
      ['GET', '/ocsp/..%2f..%2fetc%2fpasswd', undefined],
    ];
    for (const [method, path, body] of ocsp) {
      const res = await fetch(`${http}${path}`, {
        method,
        ...(body !== undefined
          ? { body: Buffer.from(body, 'latin1'), headers: { 'content-type': 'application/ocsp-request' } }
          : {}),
      });
      expect.soft([method, path.slice(0, 40), res.status < 500]).toEqual([method, path.slice(0, 40), true]);
      await res.arrayBuffer();
    }
    const ari = [
      '/acme/renewal-info/',
      '/acme/renewal-info/abc',
      '/acme/renewal-info/a.b',
      '/acme/renewal-info/a.b.c',
      '/acme/renewal-info/%00.%00',
      `/acme/renewal-info/${'A'.repeat(5000)}.${'A'.repeat(5000)}`,
      '/acme/renewal-info/a/b',
      '/acme/renewal-info',
    ];
    for (const path of ari) {
      const res = await request(env, 'GET', `${env.ca.httpsUrl}${path}`);
      expect.soft([path.slice(0, 40), res.status >= 400 && res.status < 500]).toEqual([path.slice(0, 40), true]);
      expect
        .soft([path.slice(0, 40), res.headers['content-type']])
        .toEqual([path.slice(0, 40), 'application/problem+json']);
    }
    // CRL and issuer files that don't exist: a 404 problem document, like every other error route.
    for (const path of [
      '/crl/nothing.crl',
      '/crl/0123456789abcdef-2.crl',
      '/issuers/x.cer',
      '/issuers/0123456789abcdef.cer',
    ]) {
      const res = await fetch(`${http}${path}`);
      expect.soft([path, res.status, res.headers.get('content-type')]).toEqual([path, 404, 'application/problem+json']);
      await res.arrayBuffer();
    }
  });
});
