import { createServer } from 'node:http';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createAcmeDeps } from '../../src/acme/feature.ts';
import { sweep } from '../../src/acme/janitor.ts';
import { AT_ONCE_GRACE_MS } from '../../src/acme/validate-at-once.ts';
import { createLogger } from '../../src/http/log.ts';
import { type AcmeTestEnv, internals, publish, resolveToLoopback, startAcmeEnv } from '../support/acme.ts';

let env: AcmeTestEnv;
beforeAll(async () => {
  // Long enough to see a retry (the first one comes after min(5 s, retryFor/8)).
  // Few checks at a time, so six clients saturate the worker (see the last test).
  env = await startAcmeEnv({ validation: { retryFor: '16s', concurrency: 4 } });
});
afterAll(async () => env?.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pendingOrder(name: string) {
  const client = await env.client();
  await client.createAccount({ termsOfServiceAgreed: true });
  resolveToLoopback(env, name);
  const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
  const [authz] = await client.getAuthorizations(order);
  return { client, order, authz: authz! };
}

describe('validation jobs', () => {
  it('a challenge whose answer is in place validates in its POST: the answer is valid, the order ready, no job needed', async () => {
    const { client, authz, order } = await pendingOrder('at-once.example.test');
    const challenge = await publish(env, client, authz, 'http-01');
    const res = await internals(client).api.apiRequest(challenge.url, {});
    expect(res.status).toBe(200);
    expect(res.data.status).toBe('valid');
    expect(res.data.validated).toBeTypeOf('string');
    expect(res.headers['retry-after']).toBeUndefined();
    expect((await client.getOrder(order)).status).toBe('ready');
    // Checked within the grace period: only the outcome was written.
    const jobs = await env.ca.ctx.database.db
      .selectFrom('acme_jobs')
      .select('id')
      .where('authz_id', '=', authz.url.split('/').pop()!)
      .execute();
    expect(jobs).toEqual([]);
    // POSTing it again reads it: no second check (no look-up of the name).
    const asked = () => env.dns.queries().filter((q) => q.name === 'at-once.example.test').length;
    const before = asked();
    expect((await internals(client).api.apiRequest(challenge.url, {})).data.status).toBe('valid');
    expect(asked()).toBe(before);
  });

  it('a check slower than the grace period is recorded as started, with a job, before it settles', async () => {
    const { client, authz, order } = await pendingOrder('slow.example.test');
    const challenge = await publish(env, client, authz, 'http-01');
    // Answers correctly, but only after the grace period (AT_ONCE_GRACE_MS): a replica dying
    // then would leave a job for another to take over.
    const slow = createServer((req, res) => {
      const token = req.url!.split('/').pop()!;
      setTimeout(() => res.writeHead(200).end(env.http01.get(token)), AT_ONCE_GRACE_MS + 400);
    });
    await new Promise<void>((r) => slow.listen(env.ca.config.validation.httpPort, '127.0.0.3', r));
    try {
      env.dns.setA('slow.example.test', '127.0.0.3');
      const res = await internals(client).api.apiRequest(challenge.url, {});
      expect(res.data.status).toBe('valid');
    } finally {
      slow.close();
    }
    expect((await client.getOrder(order)).status).toBe('ready');
    const job = await env.ca.ctx.database.db
      .selectFrom('acme_jobs')
      .select(['status', 'attempts', 'lease_holder'])
      .where('authz_id', '=', authz.url.split('/').pop()!)
      .executeTakeFirstOrThrow();
    expect(job).toEqual({ status: 'done', attempts: 1, lease_holder: null });
  });

  it('an order of several names turns ready when its challenges validate at the same moment', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const names = ['multi1.example.test', 'multi2.example.test', 'multi3.example.test'];
    resolveToLoopback(env, ...names);
    const order = await client.createOrder({ identifiers: names.map((value) => ({ type: 'dns', value })) });
    const authzs = await client.getAuthorizations(order);
    const challenges = await Promise.all(authzs.map((a) => publish(env, client, a, 'http-01')));
    const answers = await Promise.all(challenges.map((ch) => internals(client).api.apiRequest(ch.url, {})));
    expect(answers.map((a) => a.data.status)).toEqual(['valid', 'valid', 'valid']);
    expect((await client.getOrder(order)).status).toBe('ready');
  });

  it('a check failing for network reasons is retried: the challenge stays processing with its error, then turns valid', async () => {
    const { client, authz, order } = await pendingOrder('retry.example.test');
    // Nothing listens on 127.0.0.2: the connection is refused, which is worth another attempt.
    env.dns.setA('retry.example.test', '127.0.0.2');
    const challenge = authz.challenges.find((c) => c.type === 'http-01')!;
    const started = await internals(client).api.apiRequest(challenge.url, {});
    expect(started.status).toBe(200);
    expect(started.data.status).toBe('processing');
    // The next attempt comes after the first back-off step: min(5 s, retryFor/8) = 2 s here.
    expect(started.headers['retry-after']).toBe('2');
    expect(started.headers.link).toContain(`<${authz.url}>;rel="up"`);
    let seen: { status?: string; error?: { type?: string } } = {};
    for (let i = 0; i < 40 && !seen.error; i++) {
      await sleep(100);
      seen = (await internals(client).api.apiRequest(challenge.url, null, [200])).data;
    }
    expect(seen.status).toBe('processing');
    expect(seen.error?.type).toBe('urn:ietf:params:acme:error:connection');
    resolveToLoopback(env, 'retry.example.test');
    await publish(env, client, authz, 'http-01');
    const done = await client.waitForValidStatus(challenge);
    expect(done.status).toBe('valid');
    expect((await client.getOrder(order)).status).toBe('ready');
  });

  it('one challenge of an authorization is attempted: a POST to another while it runs only reads it', async () => {
    const { client, authz } = await pendingOrder('one-attempt.example.test');
    env.dns.setA('one-attempt.example.test', '127.0.0.2'); // refused: the attempt stays processing
    const http = authz.challenges.find((c) => c.type === 'http-01')!;
    const dns = authz.challenges.find((c) => c.type === 'dns-01')!;
    expect((await internals(client).api.apiRequest(http.url, {})).data.status).toBe('processing');
    await publish(env, client, authz, 'dns-01');
    const other = await internals(client).api.apiRequest(dns.url, {});
    expect(other.data.status).toBe('pending');
    const now = (await internals(client).api.apiRequest(authz.url, null, [200])).data as {
      status: string;
      challenges: { type: string; status: string }[];
    };
    expect(now.status).toBe('pending');
    expect(now.challenges.map((c) => [c.type, c.status])).toEqual([
      ['dns-01', 'pending'],
      ['http-01', 'processing'],
      ['tls-alpn-01', 'pending'],
    ]);
  });

  it('a challenge URL with a type the authorization does not offer is not found and starts nothing', async () => {
    const { client, authz } = await pendingOrder('no-such-type.example.test');
    const res = await internals(client).api.apiRequest(`${authz.url.replace('/authz/', '/chall/')}/smtp-01`, {}, [404]);
    expect([res.status, res.data.type]).toEqual([404, 'urn:ietf:params:acme:error:malformed']);
    const now = (await internals(client).api.apiRequest(authz.url, null, [200])).data as {
      challenges: { status: string }[];
    };
    expect(now.challenges.map((c) => c.status)).toEqual(['pending', 'pending', 'pending']);
  });

  it('a job whose holder died is taken over once its lease lapses, not before', async () => {
    const { client, authz } = await pendingOrder('lease.example.test');
    const challenge = await publish(env, client, authz, 'http-01');
    const db = env.ca.ctx.database.db;
    const id = authz.url.split('/').pop()!;
    const now = new Date();
    await db
      .updateTable('acme_authzs')
      .set({ attempted: 'http-01', attempt_status: 'processing' })
      .where('id', '=', id)
      .execute();
    await db
      .insertInto('acme_jobs')
      .values({
        id: 'ghost-job',
        authz_id: id,
        status: 'queued',
        run_at: now,
        deadline: new Date(now.getTime() + 16_000),
        lease_holder: 'ghost',
        lease_until: new Date(now.getTime() + 1_500),
        created_at: now,
        finished_at: null,
      })
      .execute();
    await sleep(1_000);
    expect((await internals(client).api.apiRequest(challenge.url, null, [200])).data.status).toBe('processing');
    expect((await client.waitForValidStatus(challenge)).status).toBe('valid');
    const job = await db
      .selectFrom('acme_jobs')
      .select(['status', 'lease_holder'])
      .where('id', '=', 'ghost-job')
      .executeTakeFirstOrThrow();
    expect(job.status).toBe('done');
  });

  it('deactivating an authorization invalidates its order', async () => {
    const { client, authz, order } = await pendingOrder('deact.example.test');
    const res = await client.deactivateAuthorization(authz);
    expect(res.status).toBe('deactivated');
    const o = await client.getOrder(order);
    expect(o.status).toBe('invalid');
    const fin = await internals(client).api.apiRequest(order.finalize, { csr: 'AAAA' });
    expect([fin.status, fin.data.type]).toEqual([403, 'urn:ietf:params:acme:error:orderNotReady']);
  });
});

describe('deactivation of a reused authorization', () => {
  it('invalidates every open order using it, the one that made it and those that reused it', async () => {
    const { client, authz, order: first } = await pendingOrder('reused.example.test');
    await internals(client).api.apiRequest((await publish(env, client, authz, 'http-01')).url, {});
    const second = await client.createOrder({ identifiers: [{ type: 'dns', value: 'reused.example.test' }] });
    expect(second.authorizations).toEqual(first.authorizations);
    expect((await client.getOrder(second)).status).toBe('ready');
    expect((await client.deactivateAuthorization(authz)).status).toBe('deactivated');
    expect((await client.getOrder(first)).status).toBe('invalid');
    expect((await client.getOrder(second)).status).toBe('invalid');
  });
});

describe('janitor', () => {
  it('purges spent nonces past expiry and old finished jobs, and marks expired orders invalid', async () => {
    const deps = createAcmeDeps(env.ca.ctx, createLogger('silent'));
    const db = env.ca.ctx.database.db;
    const past = new Date(Date.now() - 2 * 3_600_000);
    await db.insertInto('acme_spent_nonces').values({ nonce: 'old-nonce', expires_at: past }).execute();
    await db
      .insertInto('acme_spent_nonces')
      .values({ nonce: 'live-nonce', expires_at: new Date(Date.now() + 600_000) })
      .execute();
    const { order } = await pendingOrder('janitor.example.test');
    const orderId = order.url.split('/').pop()!;
    await db.updateTable('acme_orders').set({ expires: past }).where('id', '=', orderId).execute();
    const report = await sweep(deps);
    expect(report.nonces).toBeGreaterThanOrEqual(1);
    const nonces = (
      await db
        .selectFrom('acme_spent_nonces')
        .select('nonce')
        .where('nonce', 'in', ['old-nonce', 'live-nonce'])
        .execute()
    ).map((r) => r.nonce);
    expect(nonces).toEqual(['live-nonce']);
    const row = await db.selectFrom('acme_orders').select('status').where('id', '=', orderId).executeTakeFirstOrThrow();
    expect(row.status).toBe('invalid');
  });

  it('deletes orders long expired, and an authorization once no order using it is left', async () => {
    const deps = createAcmeDeps(env.ca.ctx, createLogger('silent'));
    const db = env.ca.ctx.database.db;
    const { client, authz, order: first } = await pendingOrder('kept.example.test');
    await internals(client).api.apiRequest((await publish(env, client, authz, 'http-01')).url, {});
    const second = await client.createOrder({ identifiers: [{ type: 'dns', value: 'kept.example.test' }] });
    expect(second.authorizations).toEqual(first.authorizations); // reused
    const authzId = authz.url.split('/').pop()!;
    const firstId = first.url.split('/').pop()!;
    const secondId = second.url.split('/').pop()!;
    // Forty days back: the authorization lived from day 40 to day 31 before now; the first order
    // expired on day 33, the second was made on day 35, while the authorization was live.
    const daysAgo = (d: number) => new Date(Date.now() - d * 86_400_000);
    await db
      .updateTable('acme_authzs')
      .set({ created_at: daysAgo(40), expires: daysAgo(31) })
      .where('id', '=', authzId)
      .execute();
    await db
      .updateTable('acme_orders')
      .set({ created_at: daysAgo(40), expires: daysAgo(33) })
      .where('id', '=', firstId)
      .execute();
    await db
      .updateTable('acme_orders')
      .set({ created_at: daysAgo(35), expires: daysAgo(-1) })
      .where('id', '=', secondId)
      .execute();
    const exists = async (table: 'acme_orders' | 'acme_authzs', id: string) =>
      (await db.selectFrom(table).select('id').where('id', '=', id).executeTakeFirst()) !== undefined;

    await sweep(deps);
    expect(await exists('acme_orders', firstId)).toBe(false);
    expect(await exists('acme_orders', secondId)).toBe(true);
    expect(await exists('acme_authzs', authzId)).toBe(true); // the second order still shows it

    await db
      .updateTable('acme_orders')
      .set({ expires: daysAgo(31) })
      .where('id', '=', secondId)
      .execute();
    await sweep(deps);
    expect(await exists('acme_orders', secondId)).toBe(false);
    expect(await exists('acme_authzs', authzId)).toBe(false);
  });
});

describe('validation under load', () => {
  it('keeps validating when more challenges arrive than the worker runs at once', async () => {
    const { issue } = await import('../support/acme.ts');
    const clients = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const c = await env.client();
        await c.createAccount({ termsOfServiceAgreed: true });
        return c;
      }),
    );
    // Two rounds: a worker that saturated once (4 checks at a time) must still pick up new jobs.
    for (const round of [1, 2]) {
      const issued = await Promise.all(
        clients.map((c, i) => issue(env, c, [{ type: 'dns', value: `load${round}-${i}.example.test` }], 'http-01')),
      );
      expect(issued.every((r) => r.order.status === 'valid' && r.certPem.includes('BEGIN CERTIFICATE'))).toBe(true);
    }
  });
});
