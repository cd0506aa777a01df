import acme from 'acme-client';
import { calculateJwkThumbprint } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addRule, removeRule } from '../../src/policy/index.ts';
import {
  type AcmeTestEnv,
  issue,
  rawKey,
  type RawResponse,
  resolveToLoopback,
  signedPost,
  startAcmeEnv,
} from '../support/acme.ts';

// Name policy and rate limits as an ACME client meets them: rejectedIdentifier with one subproblem
// per refused name, and rateLimited (429) with Retry-After. Raw requests, because acme-client
// (rightly) sleeps through a Retry-After.
describe('ACME name policy and rate limits', () => {
  let env: AcmeTestEnv;
  const u = (path: string) => `${env.ca.httpsUrl}/acme${path}`;
  beforeAll(async () => {
    env = await startAcmeEnv({
      settings: {
        policy: { rules: [{ deny: '*.forbidden.test' }] },
        rateLimits: {
          newOrdersPerAccount: { limit: 3, window: '1h' },
          certificatesPerName: { limit: 1, window: '1h' },
          failedValidationsPerAccount: { limit: 1, window: '1h' },
        },
      },
    });
  });
  afterAll(async () => env?.close());

  async function account() {
    const key = await rawKey();
    const kid = String(
      (await signedPost(env, u('/new-account'), key, { termsOfServiceAgreed: true })).headers.location,
    );
    const post = (url: string, payload: unknown) => signedPost(env, url, key, payload, { jwk: undefined, kid });
    return { id: kid.split('/').pop()!, kid, post, jwk: key.jwk };
  }

  function expectProblem(res: RawResponse, status: number, type: string): Record<string, unknown> {
    expect(res.status, res.body).toBe(status);
    expect(res.headers['content-type']).toBe('application/problem+json');
    const doc = res.json();
    expect(doc.type).toBe(`urn:ietf:params:acme:error:${type}`);
    return doc;
  }

  async function until<T>(fn: () => Promise<T | undefined>): Promise<T> {
    for (let i = 0; i < 100; i++) {
      const v = await fn();
      if (v !== undefined) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('timed out');
  }

  it('refuses the denied names only, one subproblem each, naming the rule; deny wins over a scoped allow', async () => {
    const a = await account();
    await addRule(env.ca.ctx.database.db, {
      scope: `account:${a.id}`,
      effect: 'allow',
      pattern: '*.example.test',
      principal: 'test',
    });
    const res = await a.post(u('/new-order'), {
      identifiers: ['ok.example.test', 'a.forbidden.test', 'elsewhere.test'].map((value) => ({ type: 'dns', value })),
    });
    const doc = expectProblem(res, 400, 'rejectedIdentifier') as {
      subproblems: { identifier: { value: string }; detail: string; type: string }[];
    };
    expect(doc.subproblems.map((s) => s.identifier.value).sort()).toEqual(['a.forbidden.test', 'elsewhere.test']);
    expect(doc.subproblems.find((s) => s.identifier.value === 'a.forbidden.test')!.detail).toContain(
      '*.forbidden.test',
    );
    expect(doc).not.toHaveProperty('identifier');
    const fine = await a.post(u('/new-order'), { identifiers: [{ type: 'dns', value: 'ok.example.test' }] });
    expect(fine.status).toBe(201);
  });

  it('limits new orders per account with rateLimited and Retry-After', async () => {
    const a = await account();
    for (let i = 0; i < 3; i++)
      expect(
        (await a.post(u('/new-order'), { identifiers: [{ type: 'dns', value: `n${i}.example.test` }] })).status,
      ).toBe(201);
    const res = await a.post(u('/new-order'), { identifiers: [{ type: 'dns', value: 'n3.example.test' }] });
    expectProblem(res, 429, 'rateLimited');
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(3000);
    expect(res.headers['replay-nonce']).toBeTruthy();
    const other = await account();
    expect(
      (await other.post(u('/new-order'), { identifiers: [{ type: 'dns', value: 'n3.example.test' }] })).status,
    ).toBe(201);
  });

  /** An order of a fresh raw account for `name`, validated over http-01: ready when this returns. */
  async function readyOrder(name: string) {
    resolveToLoopback(env, name);
    const a = await account();
    const order = (await a.post(u('/new-order'), { identifiers: [{ type: 'dns', value: name }] })).json() as {
      authorizations: string[];
      finalize: string;
    };
    const orderUrl = order.finalize.replace(/\/finalize$/, '');
    const authz = (await a.post(order.authorizations[0]!, '')).json() as {
      challenges: { type: string; url: string; token: string }[];
    };
    const ch = authz.challenges.find((c) => c.type === 'http-01')!;
    env.http01.set(ch.token, `${ch.token}.${await calculateJwkThumbprint(a.jwk)}`);
    await a.post(ch.url, {});
    await until(async () => ((await a.post(orderUrl, '')).json().status === 'ready' ? true : undefined));
    const [, csr] = await acme.crypto.createCsr({ altNames: [name] }, await acme.crypto.createPrivateEcdsaKey());
    const der = Buffer.from(csr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64url');
    return { a, orderUrl, finalize: () => a.post(order.finalize, { csr: der }) };
  }

  it('holds the new-order limit for requests that arrive together, per account', async () => {
    const a = await account();
    const b = await account();
    const order = (who: typeof a, i: number) =>
      who.post(u('/new-order'), { identifiers: [{ type: 'dns', value: `together${i}.example.test` }] });
    const results = await Promise.all([...[0, 1, 2, 3, 4].map((i) => order(a, i)), order(b, 5), order(b, 6)]);
    const statuses = results.map((r) => r.status);
    expect(statuses.slice(0, 5).sort()).toEqual([201, 201, 201, 429, 429]);
    expect(statuses.slice(5)).toEqual([201, 201]);
  });

  it('limits certificates per name at finalize with rateLimited and Retry-After, leaving the order ready', async () => {
    const first = await env.client();
    await first.createAccount({ termsOfServiceAgreed: true });
    await issue(env, first, [{ type: 'dns', value: 'once.example.test' }], 'http-01');

    // A second account proves control too, then asks for the same name again.
    const { a, orderUrl, finalize } = await readyOrder('once.example.test');
    const res = await finalize();
    const doc = expectProblem(res, 429, 'rateLimited');
    expect(doc.detail).toContain('once.example.test');
    // The window is an hour and began with the first certificate moments ago.
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(3000);
    expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(3600);
    expect((await a.post(orderUrl, '')).json().status).toBe('ready');
  });

  it('decides the name policy again at finalize: a deny rule added after newOrder refuses and changes nothing', async () => {
    const name = 'late-deny.example.test';
    const { a, orderUrl, finalize } = await readyOrder(name);
    const db = env.ca.ctx.database.db;
    const { rule } = await addRule(db, { scope: 'global', effect: 'deny', pattern: name, principal: 'test' });
    const doc = expectProblem(await finalize(), 400, 'rejectedIdentifier') as {
      subproblems: { identifier: { value: string }; detail: string }[];
    };
    expect(doc.subproblems.map((p) => p.identifier.value)).toEqual([name]);
    expect(doc.subproblems[0]!.detail).toContain(name);
    // Nothing changed: the order is still ready and the name was not counted.
    expect((await a.post(orderUrl, '')).json().status).toBe('ready');
    const counted = await db.selectFrom('rate_limit_counters').selectAll().where('key', '=', name).execute();
    expect(counted).toEqual([]);

    await removeRule(db, rule.id);
    const res = await finalize();
    expect(res.status, res.body).toBe(200);
    expect(res.json().status).toBe('valid');
  });

  it('after too many failed validations, a new challenge is refused with rateLimited', async () => {
    const a = await account();
    resolveToLoopback(env, 'fails.example.test', 'later.example.test');
    const startChallenge = async (name: string) => {
      const order = (await a.post(u('/new-order'), { identifiers: [{ type: 'dns', value: name }] })).json() as {
        authorizations: string[];
      };
      const authzUrl = order.authorizations[0]!;
      const authz = (await a.post(authzUrl, '')).json() as {
        challenges: { type: string; url: string; token: string }[];
      };
      const ch = authz.challenges.find((c) => c.type === 'http-01')!;
      env.http01.set(ch.token, 'not the key authorization');
      return { authzUrl, res: await a.post(ch.url, {}) };
    };
    const first = await startChallenge('fails.example.test');
    expect(first.res.status).toBe(200);
    await until(async () => ((await a.post(first.authzUrl, '')).json().status === 'invalid' ? true : undefined));
    const second = await startChallenge('later.example.test');
    expectProblem(second.res, 429, 'rateLimited');
  });
});
