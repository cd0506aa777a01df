import { createHash, generateKeyPairSync } from 'node:crypto';

import type * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createAcmeDeps } from '../../src/acme/feature.ts';
import { orderTurnsValid } from '../../src/acme/finalize.ts';
import { insertOrder } from '../../src/acme/order-store.ts';
import { type OrderClaim, orderClaims } from '../../src/acme/orders.ts';
import { settleValid } from '../../src/acme/settle.ts';
import type { IssuedCertificate, IssueRequest } from '../../src/ca/authority.ts';
import { createLogger } from '../../src/http/log.ts';
import { namesCountedWithRecord } from '../../src/issuance/name-limit.ts';
import { type AcmeTestEnv, publish, resolveToLoopback, startAcmeEnv } from '../support/acme.ts';

// Writes of concurrent ACME requests that go together in one statement: checks run at once that
// passed (acme/settle.ts) and finalize's claims, which ride with their serials' reservations
// (acme/orders.ts orderClaims). Calls made in the same tick go in the same batch.

let env: AcmeTestEnv;
beforeAll(async () => {
  env = await startAcmeEnv();
});
afterAll(async () => env?.close());

const idOf = (url: string) => url.split('/').pop()!;

async function account(): Promise<{ client: acme.Client; accountId: string }> {
  const client = await env.client();
  await client.createAccount({ termsOfServiceAgreed: true });
  return { client, accountId: idOf(client.getAccountUrl()) };
}

/** An order for `name` whose challenge a client completed. */
async function validatedOrder(name: string): Promise<{ orderId: string; accountId: string }> {
  const { client, accountId } = await account();
  resolveToLoopback(env, name);
  const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
  const [authz] = await client.getAuthorizations(order);
  const ch = await publish(env, client, authz!, 'http-01');
  await client.completeChallenge(ch);
  await client.waitForValidStatus(ch);
  return { orderId: idOf(order.url), accountId };
}

/** A decided request for a new P-256 key and `name`, as ACME finalize makes one. */
const requestFor = (name: string, accountId: string): IssueRequest => ({
  subjectPublicKeyInfo: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
    format: 'der',
    type: 'spki',
  }),
  keyType: 'ecdsa-p256',
  sans: { dns: [name], ip: [], uri: [], email: [] },
  profile: env.ca.ctx.config.acme.defaultProfile,
  requester: `acme:${accountId}`,
});

const reservationsOf = (requester: string) =>
  env.ca.ctx.database.db
    .selectFrom('serial_reservations')
    .select(['serial', 'status'])
    .where('requester', '=', requester)
    .execute();

const orderStatus = async (orderId: string) =>
  (
    await env.ca.ctx.database.db
      .selectFrom('acme_orders')
      .select('status')
      .where('id', '=', orderId)
      .executeTakeFirstOrThrow()
  ).status;

describe('checks run at once, settled together', () => {
  it('two authorizations of one order valid in the same statement make the order ready', async () => {
    const { client, accountId } = await account();
    const order = await client.createOrder({
      identifiers: [
        { type: 'dns', value: 'both1.group.test' },
        { type: 'dns', value: 'both2.group.test' },
      ],
    });
    const deps = createAcmeDeps(env.ca.ctx, createLogger('silent'));
    const settled = await Promise.all(
      order.authorizations.map((url) =>
        settleValid(deps, { id: null, authzId: idOf(url), type: 'http-01', accountId }, deps.holder),
      ),
    );
    expect(settled.map((c) => c?.status)).toEqual(['valid', 'valid']);
    // Each authorization is the other's "still pending" unless the statement counts its own.
    expect(await orderStatus(idOf(order.url))).toBe('ready');
  });

  it('the same authorization twice in a batch is settled once; another account’s is not settled', async () => {
    const { client, accountId } = await account();
    const other = await account();
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'twice.group.test' }] });
    const authzId = idOf(order.authorizations[0]!);
    const deps = createAcmeDeps(env.ca.ctx, createLogger('silent'));
    const [first, second, foreign] = await Promise.all([
      settleValid(deps, { id: null, authzId, type: 'http-01', accountId }, deps.holder),
      settleValid(deps, { id: null, authzId, type: 'dns-01', accountId }, deps.holder),
      settleValid(deps, { id: null, authzId, type: 'http-01', accountId: other.accountId }, deps.holder),
    ]);
    expect(first).toMatchObject({ type: 'http-01', status: 'valid' });
    expect(second).toBeUndefined();
    expect(foreign).toBeUndefined();
    const row = await env.ca.ctx.database.db
      .selectFrom('acme_authzs')
      .select(['status', 'attempted'])
      .where('id', '=', authzId)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ status: 'valid', attempted: 'http-01' });
  });
});

describe('new orders, written together', () => {
  it('each gets its own authorizations; an account over its limit gets no more orders than it may', async () => {
    const a = await account();
    const b = await account();
    const now = new Date();
    const order = (accountId: string, name: string, id = `${name}-order`) =>
      insertOrder(env.ca.ctx.database.db, {
        id,
        accountId,
        identifiers: [
          { type: 'dns', value: name },
          { type: 'dns', value: `www.${name}` },
        ],
        profile: env.ca.ctx.config.acme.defaultProfile,
        notAfter: null,
        replaces: null,
        now,
        expires: new Date(now.getTime() + 3_600_000),
        authzExpires: new Date(now.getTime() + 3_600_000),
        reuseSince: null,
        limit: { name: 'newOrdersPerAccount', limit: 2, windowMs: 3_600_000 },
      });
    const made = await Promise.all([
      order(a.accountId, 'a1.batch.test'),
      order(a.accountId, 'a2.batch.test'),
      order(b.accountId, 'b1.batch.test'),
      order(a.accountId, 'a3.batch.test'),
    ]);
    expect(made.map((o) => o?.id)).toEqual([
      'a1.batch.test-order',
      'a2.batch.test-order',
      'b1.batch.test-order',
      undefined,
    ]);
    const authzs = await env.ca.ctx.database.db
      .selectFrom('acme_authzs')
      .select(['id', 'order_id', 'identifier_value', 'account_id'])
      .where('identifier_value', 'like', '%.batch.test')
      .execute();
    for (const o of made.slice(0, 3)) {
      const own = authzs.filter((z) => z.order_id === o!.id);
      expect(own.map((z) => z.identifier_value).sort()).toEqual(o!.identifiers.map((i) => i.value).sort());
      expect(o!.authz_ids).toEqual(o!.identifiers.map((i) => own.find((z) => z.identifier_value === i.value)!.id));
      expect(own.every((z) => z.account_id === o!.account_id)).toBe(true);
      expect(o!.status).toBe('pending');
    }
    expect(
      authzs.filter((z) => z.identifier_value.startsWith('a3') || z.identifier_value.endsWith('a3.batch.test')),
    ).toEqual([]);
  });
});

describe('finalize claims, written with the reservation', () => {
  /** A ready order, and an issue request for its name whose reservation claims it. */
  async function readyOrder(name: string) {
    const { orderId, accountId } = await validatedOrder(name);
    expect(await orderStatus(orderId)).toBe('ready');
    let claims = 0;
    const request = (): IssueRequest => ({
      ...requestFor(name, accountId),
      reserveWith: {
        claims: orderClaims,
        item: { orderId, accountId, now: new Date() } satisfies OrderClaim,
        lost: () => Promise.resolve(new Error('claim lost')),
        claimed: () => claims++,
      },
    });
    return { orderId, request, claims: () => claims };
  }

  it('of claims on one order in the same batch, one signs; a later claim is lost too', async () => {
    const { orderId, request, claims } = await readyOrder('claimed.group.test');
    const outcomes = await Promise.allSettled([env.ca.ctx.ca.issue(request()), env.ca.ctx.ca.issue(request())]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const lost = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect((lost.reason as Error).message).toBe('claim lost');
    expect(claims()).toBe(1);
    expect(await orderStatus(orderId)).toBe('processing');
    // The order is no longer ready: a claim in a later statement is vetoed by the order's state.
    await expect(env.ca.ctx.ca.issue(request())).rejects.toThrow('claim lost');
    expect(claims()).toBe(1);
    expect(await reservationsOf(request().requester)).toHaveLength(1);
  });

  it('a blocked key refuses the request and leaves the order ready', async () => {
    const { orderId, request, claims } = await readyOrder('blocked.group.test');
    const req = request();
    await env.ca.ctx.database.db
      .insertInto('blocked_keys')
      .values({ spki_sha256: createHash('sha256').update(req.subjectPublicKeyInfo).digest(), reason: 'test' })
      .execute();
    await expect(env.ca.ctx.ca.issue(req)).rejects.toMatchObject({ kind: 'badPublicKey' });
    expect(claims()).toBe(0);
    expect(await orderStatus(orderId)).toBe('ready');
    expect(await reservationsOf(req.requester)).toEqual([]);
  });
});

describe('certificates recorded together', () => {
  /** A claimed order (processing) for `name`, as finalize leaves it before signing. */
  async function processingOrder(name: string) {
    const { orderId, accountId } = await validatedOrder(name);
    await env.ca.ctx.database.db
      .updateTable('acme_orders')
      .set({ status: 'processing' })
      .where('id', '=', orderId)
      .execute();
    return { orderId, accountId };
  }

  const rule = { name: 'certificatesPerName', limit: 100, windowMs: 3_600_000 };
  const issueFor = (name: string, orderId: string, accountId: string): Promise<IssuedCertificate> =>
    env.ca.ctx.ca.issue({
      ...requestFor(name, accountId),
      recordWith: { writer: orderTurnsValid, item: { orderId, now: new Date() } },
      recordAlso: [{ writer: namesCountedWithRecord(rule), item: { keys: [name], now: new Date() } }],
    });

  it('each with its own order and count; one whose order changed is not recorded, the others are', async () => {
    const name = 'together.group.test';
    const a = await processingOrder(name);
    const b = await processingOrder(name);
    const c = await processingOrder(name);
    // c's order is no longer processing (deactivated meanwhile, say): its certificate must not be recorded.
    await env.ca.ctx.database.db
      .updateTable('acme_orders')
      .set({ status: 'invalid' })
      .where('id', '=', c.orderId)
      .execute();
    const outcomes = await Promise.allSettled([
      issueFor(name, a.orderId, a.accountId),
      issueFor(name, b.orderId, b.accountId),
      issueFor(name, c.orderId, c.accountId),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    const [ia, ib] = outcomes.map((o) => (o.status === 'fulfilled' ? o.value : undefined));
    expect((outcomes[2] as PromiseRejectedResult).reason.message).toMatch(/signed but its request changed/);
    const db = env.ca.ctx.database.db;
    for (const [o, issued] of [
      [a, ia],
      [b, ib],
    ] as const) {
      const row = await db
        .selectFrom('acme_orders')
        .select(['status', 'certificate_serial'])
        .where('id', '=', o.orderId)
        .executeTakeFirstOrThrow();
      expect(row).toEqual({ status: 'valid', certificate_serial: issued!.serial });
      expect(issued!.linked).toEqual([expect.objectContaining({ id: o.orderId, status: 'valid' })]);
    }
    const stored = await db
      .selectFrom('certificates')
      .select('requester')
      .where(
        'requester',
        'in',
        [a, b, c].map((o) => `acme:${o.accountId}`),
      )
      .execute();
    expect(stored.map((r) => r.requester).sort()).toEqual([`acme:${a.accountId}`, `acme:${b.accountId}`].sort());
    // c's reservation stays: it names a certificate that was signed and never recorded.
    expect((await reservationsOf(`acme:${c.accountId}`)).map((r) => r.status)).toEqual(['reserved']);
    const counter = await db
      .selectFrom('rate_limit_counters')
      .select('count')
      .where('name', '=', 'certificatesPerName')
      .where('key', '=', name)
      .executeTakeFirstOrThrow();
    expect(Number(counter.count)).toBe(2);
  });
});
