import { Agent, request as httpsRequest } from 'node:https';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  type AcmeTestEnv,
  freshNonce,
  type RawKey,
  rawKey,
  request,
  signedPost,
  signJws,
  startAcmeEnv,
} from '../support/acme.ts';

let env: AcmeTestEnv;
let key: RawKey;
let kid: string;
const u = (path: string) => `${env.ca.httpsUrl}/acme${path}`;

beforeAll(async () => {
  env = await startAcmeEnv();
  key = await rawKey();
  kid = String((await signedPost(env, u('/new-account'), key, {})).headers.location);
});
afterAll(async () => env?.close());

const asAccount = (url: string, payload: unknown, header: Record<string, unknown> = {}) =>
  signedPost(env, url, key, payload, { jwk: undefined, kid, ...header });

function expectProblem(
  res: { status: number; headers: Record<string, unknown>; json(): Record<string, unknown> },
  status: number,
  type: string,
): Record<string, unknown> {
  expect(res.headers['content-type']).toBe('application/problem+json');
  const body = res.json();
  expect({ status: res.status, type: body.type }).toEqual({ status, type: `urn:ietf:params:acme:error:${type}` });
  return body;
}

describe('directory and nonces', () => {
  it('lists every endpoint as an absolute https URL, meta with fixed types, and no newAuthz', async () => {
    const res = await request(env, 'GET', env.directoryUrl);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    const dir = res.json();
    for (const k of ['newNonce', 'newAccount', 'newOrder', 'revokeCert', 'keyChange', 'renewalInfo']) {
      expect(dir[k], k).toMatch(new RegExp(`^${env.ca.httpsUrl}/acme/`));
    }
    expect(dir.renewalInfo).toBe(u('/renewal-info'));
    expect(dir).not.toHaveProperty('newAuthz');
    const meta = dir.meta as Record<string, unknown>;
    expect(typeof meta.externalAccountRequired).toBe('boolean');
    expect(meta.caaIdentities).toEqual(['keyward.internal']);
    expect(meta.profiles).toMatchObject({ 'tls-server': expect.any(String), mtls: expect.any(String) });
    expect(meta).not.toHaveProperty('termsOfService');
  });

  it('newNonce: HEAD 200, GET 204 with an empty body, both no-store with the index link and distinct nonces', async () => {
    const head = await request(env, 'HEAD', u('/new-nonce'), { headers: { 'content-type': 'application/jose+json' } });
    const get = await request(env, 'GET', u('/new-nonce'));
    expect(head.status).toBe(200);
    expect(get.status).toBe(204);
    expect(get.body).toBe('');
    for (const r of [head, get]) {
      expect(r.headers['cache-control']).toBe('no-store');
      expect(r.headers['replay-nonce']).toMatch(/^[A-Za-z0-9_-]{22,}$/);
      expect(r.headers.link).toBe(`<${env.directoryUrl}>;rel="index"`);
    }
    expect(head.headers['replay-nonce']).not.toBe(get.headers['replay-nonce']);
  });

  it("HEAD newNonce keeps the connection open for Node's HTTP client (acme-client)", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
    const sockets: unknown[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        await new Promise<void>((resolve, reject) => {
          const req = httpsRequest(u('/new-nonce'), { method: 'HEAD', agent }, (res) => {
            expect(res.statusCode).toBe(200);
            expect(res.headers['content-length']).toBe('0');
            sockets.push(res.socket);
            res.resume();
            res.on('end', resolve);
          });
          req.on('error', reject);
          req.end();
        });
      }
    } finally {
      agent.destroy();
    }
    // Without a length Node cannot tell where a HEAD answer ends and opens a new TLS connection each time.
    expect(sockets[1]).toBe(sockets[0]);
  });

  it('a nonce is single-use: replaying a request is badNonce with the acme.sh text and a fresh nonce', async () => {
    const body = JSON.stringify(await signJws(key, '', { alg: key.alg, nonce: await freshNonce(env), url: kid, kid }));
    const first = await request(env, 'POST', kid, { headers: { 'content-type': 'application/jose+json' }, body });
    expect(first.status).toBe(200);
    expect(first.headers['replay-nonce']).toBeTruthy();
    const replay = await request(env, 'POST', kid, { headers: { 'content-type': 'application/jose+json' }, body });
    const p = expectProblem(replay, 400, 'badNonce');
    expect(p.detail).toContain('JWS has an invalid anti-replay nonce');
    expect(replay.headers['replay-nonce']).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it('requests sent at once share nonce spends, yet each nonce still works exactly once', async () => {
    // Distinct nonces, each sent twice, all in flight together: the server spends concurrent nonces
    // in shared statements, and a duplicate inside one batch must still lose.
    const bodies = await Promise.all(
      Array.from({ length: 6 }, async () =>
        JSON.stringify(await signJws(key, '', { alg: key.alg, nonce: await freshNonce(env), url: kid, kid })),
      ),
    );
    const send = (body: string) =>
      request(env, 'POST', kid, { headers: { 'content-type': 'application/jose+json' }, body });
    const results = await Promise.all([...bodies, ...bodies].map(send));
    const byBody = bodies.map((_, i) => [results[i]!.status, results[i + bodies.length]!.status].sort());
    expect(byBody).toEqual(bodies.map(() => [200, 400]));
  });

  it('an invented or malformed nonce is badNonce', async () => {
    for (const nonce of ['AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', '!!']) {
      expectProblem(await asAccount(kid, '', { nonce }), 400, 'badNonce');
    }
  });
});

describe('JWS checks', () => {
  it('wrong Content-Type is 415 with a problem document', async () => {
    expectProblem(
      await signedPost(env, u('/new-account'), await rawKey(), {}, {}, { contentType: 'application/json' }),
      415,
      'malformed',
    );
  });

  it('a url header differing from the request URL is refused', async () => {
    expectProblem(await asAccount(kid, '', { url: `${kid}/` }), 403, 'unauthorized');
    expectProblem(
      await signedPost(env, u('/new-account'), await rawKey(), {}, { url: u('/new-order') }),
      403,
      'unauthorized',
    );
  });

  it('alg none and HS256 are badSignatureAlgorithm with the algorithms list', async () => {
    for (const alg of ['none', 'HS256']) {
      const header = Buffer.from(
        JSON.stringify({ alg, nonce: await freshNonce(env), url: u('/new-account'), jwk: key.jwk }),
      ).toString('base64url');
      const body = JSON.stringify({
        protected: header,
        payload: Buffer.from('{}').toString('base64url'),
        signature: '',
      });
      const res = await request(env, 'POST', u('/new-account'), {
        headers: { 'content-type': 'application/jose+json' },
        body,
      });
      const p = expectProblem(res, 400, 'badSignatureAlgorithm');
      expect(p.algorithms).toEqual(expect.arrayContaining(['ES256', 'RS256', 'EdDSA']));
    }
  });

  it('refuses both jwk and kid, jwk where kid is needed, padded base64url, general serialization', async () => {
    expectProblem(await signedPost(env, u('/new-order'), key, { identifiers: [] }, { kid }), 400, 'malformed');
    expectProblem(
      await signedPost(env, u('/new-order'), key, { identifiers: [{ type: 'dns', value: 'a.example.test' }] }),
      400,
      'malformed',
    );
    const jws = await signJws(key, '', { alg: key.alg, nonce: await freshNonce(env), url: kid, kid });
    const padded = await request(env, 'POST', kid, {
      headers: { 'content-type': 'application/jose+json' },
      body: JSON.stringify({ ...jws, signature: `${jws.signature}=` }),
    });
    expectProblem(padded, 400, 'malformed');
    const general = await request(env, 'POST', kid, {
      headers: { 'content-type': 'application/jose+json' },
      body: JSON.stringify({
        payload: jws.payload,
        signatures: [{ protected: jws.protected, signature: jws.signature }],
      }),
    });
    expectProblem(general, 400, 'malformed');
  });

  it('an unknown kid is accountDoesNotExist', async () => {
    const other = `${u('/acct/')}nosuchaccount`;
    expectProblem(await asAccount(u('/new-order'), { identifiers: [] }, { kid: other }), 400, 'accountDoesNotExist');
  });

  it('a weak RSA key is badPublicKey', async () => {
    // jose refuses to sign with such a key, so the JWS is built by hand.
    const { generateKeyPairSync, sign } = await import('node:crypto');
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const jwk = publicKey.export({ format: 'jwk' });
    const header = Buffer.from(
      JSON.stringify({ alg: 'RS256', nonce: await freshNonce(env), url: u('/new-account'), jwk }),
    ).toString('base64url');
    const payload = Buffer.from('{}').toString('base64url');
    const signature = sign('sha256', Buffer.from(`${header}.${payload}`), privateKey).toString('base64url');
    const res = await request(env, 'POST', u('/new-account'), {
      headers: { 'content-type': 'application/jose+json' },
      body: JSON.stringify({ protected: header, payload, signature }),
    });
    expectProblem(res, 400, 'badPublicKey');
  });

  it('GET on a POST-as-GET resource is 405 with Allow; an unknown path is 404; both problem documents', async () => {
    const get = await request(env, 'GET', kid);
    expectProblem(get, 405, 'malformed');
    expect(get.headers.allow).toBe('POST');
    expectProblem(await request(env, 'GET', u('/nothing/here')), 404, 'malformed');
  });
});

describe('orders', () => {
  it('an unknown profile is invalidProfile; the default profile is echoed', async () => {
    expectProblem(
      await asAccount(u('/new-order'), { identifiers: [{ type: 'dns', value: 'p.example.test' }], profile: 'nope' }),
      400,
      'invalidProfile',
    );
    const ok = await asAccount(u('/new-order'), {
      identifiers: [{ type: 'dns', value: 'p.example.test' }],
      foo: 'ignored',
    });
    expect(ok.status).toBe(201);
    expect(ok.json().profile).toBe('tls-server');
    expect(ok.headers.location).toMatch(new RegExp(`^${u('/order/')}`));
    const picked = await asAccount(u('/new-order'), {
      identifiers: [{ type: 'dns', value: 'p.example.test' }],
      profile: 'mtls',
    });
    expect(picked.json().profile).toBe('mtls');
  });

  it('refuses bad identifiers with one subproblem each', async () => {
    const res = await asAccount(u('/new-order'), {
      identifiers: [
        { type: 'email', value: 'a@example.test' },
        { type: 'dns', value: 'UPPER.example.test' },
        { type: 'dns', value: 'a.*.example.test' },
        { type: 'ip', value: '2001:DB8::1' },
        { type: 'dns', value: 'a.123' },
        { type: 'dns', value: 'xn--ls8h.example.test' },
        { type: 'dns', value: 'single-label' },
      ],
    });
    const p = expectProblem(res, 400, 'compound');
    expect(p).not.toHaveProperty('identifier');
    const subs = p.subproblems as { type: string; identifier: { value: string } }[];
    expect(subs.map((s) => [s.type.split(':').pop(), s.identifier.value])).toEqual([
      ['unsupportedIdentifier', 'a@example.test'],
      ['rejectedIdentifier', 'UPPER.example.test'],
      ['malformed', 'a.*.example.test'],
      ['rejectedIdentifier', '2001:DB8::1'],
      ['malformed', 'a.123'],
      ['malformed', 'xn--ls8h.example.test'],
      ['malformed', 'single-label'],
    ]);
    expect(subs[4]).toMatchObject({ detail: 'DNS name "a.123" ends in an all-numeric label' });
  });

  it('stores and echoes notAfter; refuses notBefore', async () => {
    const notAfter = new Date(Date.now() + 3_600_000).toISOString();
    const ok = await asAccount(u('/new-order'), { identifiers: [{ type: 'dns', value: 'na.example.test' }], notAfter });
    expect(ok.json().notAfter).toBe(notAfter);
    expectProblem(
      await asAccount(u('/new-order'), {
        identifiers: [{ type: 'dns', value: 'na.example.test' }],
        notBefore: notAfter,
      }),
      400,
      'malformed',
    );
  });

  it('another account cannot read an order, and finalizing a pending order is orderNotReady', async () => {
    const created = await asAccount(u('/new-order'), { identifiers: [{ type: 'dns', value: 'mine.example.test' }] });
    const orderUrl = String(created.headers.location);
    const got = await asAccount(orderUrl, '');
    expect(got.status).toBe(200);
    expect(got.headers['retry-after']).toBe('1');
    const otherKey = await rawKey();
    const otherKid = String((await signedPost(env, u('/new-account'), otherKey, {})).headers.location);
    expectProblem(
      await signedPost(env, orderUrl, otherKey, '', { jwk: undefined, kid: otherKid }),
      403,
      'unauthorized',
    );
    expectProblem(await asAccount(`${orderUrl}/finalize`, { csr: 'AAAA' }), 403, 'orderNotReady');
  });

  it("authorizations and orders read with their nonce's spend: replays and other accounts see nothing, each request its own", async () => {
    const created = await asAccount(u('/new-order'), { identifiers: [{ type: 'dns', value: 'az.example.test' }] });
    const authzUrl = (created.json().authorizations as string[])[0]!;
    const otherKey = await rawKey();
    const otherKid = String((await signedPost(env, u('/new-account'), otherKey, {})).headers.location);
    const otherCreated = await signedPost(
      env,
      u('/new-order'),
      otherKey,
      {
        identifiers: [{ type: 'dns', value: 'az-other.example.test' }],
      },
      { jwk: undefined, kid: otherKid },
    );
    const otherAuthzUrl = (otherCreated.json().authorizations as string[])[0]!;
    const post = (url: string, k: RawKey, account: string, nonce: Promise<string>) =>
      nonce
        .then((n) => signJws(k, '', { alg: k.alg, nonce: n, url, kid: account }))
        .then((jws) =>
          request(env, 'POST', url, {
            headers: { 'content-type': 'application/jose+json' },
            body: JSON.stringify(jws),
          }),
        );

    const orderUrl = String(created.headers.location);
    const otherOrderUrl = String(otherCreated.headers.location);
    // Sent together, so they share one spend: each answer is the resource its request named.
    const [mine, theirs, foreign, unknown, myOrder, theirOrder, foreignOrder, unknownOrder] = await Promise.all([
      post(authzUrl, key, kid, freshNonce(env)),
      post(otherAuthzUrl, otherKey, otherKid, freshNonce(env)),
      post(otherAuthzUrl, key, kid, freshNonce(env)),
      post(authzUrl.replace(/[^/]+$/, 'no-such-authz'), key, kid, freshNonce(env)),
      post(orderUrl, key, kid, freshNonce(env)),
      post(otherOrderUrl, otherKey, otherKid, freshNonce(env)),
      post(otherOrderUrl, key, kid, freshNonce(env)),
      post(orderUrl.replace(/[^/]+$/, 'no-such-order'), key, kid, freshNonce(env)),
    ]);
    expect([mine.status, mine.json().identifier]).toEqual([200, { type: 'dns', value: 'az.example.test' }]);
    expect([theirs.status, theirs.json().identifier]).toEqual([200, { type: 'dns', value: 'az-other.example.test' }]);
    expectProblem(foreign, 403, 'unauthorized');
    expectProblem(unknown, 404, 'malformed');
    expect([myOrder.status, myOrder.json().authorizations]).toEqual([200, [authzUrl]]);
    expect([theirOrder.status, theirOrder.json().authorizations]).toEqual([200, [otherAuthzUrl]]);
    expectProblem(foreignOrder, 403, 'unauthorized');
    expectProblem(unknownOrder, 404, 'malformed');

    // A replayed read is refused before anything read with it is shown.
    const nonce = await freshNonce(env);
    expect((await post(authzUrl, key, kid, Promise.resolve(nonce))).status).toBe(200);
    const replay = expectProblem(await post(authzUrl, key, kid, Promise.resolve(nonce)), 400, 'badNonce');
    expect(JSON.stringify(replay)).not.toContain('az.example.test');
  });

  it('a challenge POST ignores unknown fields (legacy keyAuthorization) and links up to its authorization', async () => {
    const created = await asAccount(u('/new-order'), { identifiers: [{ type: 'dns', value: 'legacy.example.test' }] });
    const authzUrl = (created.json().authorizations as string[])[0]!;
    const authz = (await asAccount(authzUrl, '')).json() as { challenges: { type: string; url: string }[] };
    const ch = authz.challenges.find((c) => c.type === 'http-01')!;
    const res = await asAccount(ch.url, { keyAuthorization: 'x', foo: 1 });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ url: ch.url, status: 'processing', type: 'http-01' });
    expect(res.headers.link).toContain(`<${authzUrl}>;rel="up"`);
    // One link per header line: x/crypto/acme (cert-manager) reads each line as a single link.
    const links = res.rawHeaders.filter((_, i) => i % 2 === 1 && /^link$/i.test(res.rawHeaders[i - 1]!));
    expect(links).toContain(`<${authzUrl}>;rel="up"`);
    expect(links).toContain(`<${u('/directory')}>;rel="index"`);
  });

  it('revoking a certificate this CA did not issue is 404', async () => {
    const { selfSignedCert } = await import('../validation/helpers.ts');
    const foreign = await selfSignedCert({ sans: [{ type: 'dns', value: 'foreign.example.test' }] });
    const der = Buffer.from(foreign.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64url');
    expectProblem(await asAccount(u('/revoke-cert'), { certificate: der }), 404, 'malformed');
  });
});
