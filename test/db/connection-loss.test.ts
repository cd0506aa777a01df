import { X509Certificate } from 'node:crypto';

import type * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, internals, issue, startAcmeEnv } from '../support/acme.ts';
import { captureLog } from '../support/log.ts';
import { startThrowawayCluster, type ThrowawayCluster } from '../support/pg-cluster.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const serialOf = (pem: string) => BigInt(`0x${new X509Certificate(pem).serialNumber}`).toString(16);

/**
 * ACME load from a few clients, each issuing one certificate after another; failures (503s while
 * the database is away) are counted, not fatal. Every certificate a client received is recorded.
 */
function startLoad(env: AcmeTestEnv, clients: acme.Client[]) {
  const received: string[] = [];
  const failures: string[] = [];
  let stopped = false;
  let n = 0;
  const runs = clients.map(async (client, i) => {
    while (!stopped) {
      try {
        const { certPem } = await issue(env, client, [{ type: 'dns', value: `c${i}-${n++}.loss.test` }], 'http-01');
        received.push(serialOf(certPem));
      } catch (err) {
        failures.push((err as Error).message);
        await sleep(100);
      }
    }
  });
  return {
    received,
    failures,
    /** Resolves once `count` more certificates have been received. */
    async waitFor(count: number, timeoutMs = 60_000) {
      const target = received.length + count;
      const deadline = Date.now() + timeoutMs;
      while (received.length < target) {
        if (Date.now() > deadline) throw new Error(`load stalled: ${failures.slice(-3).join(' | ')}`);
        await sleep(50);
      }
    },
    async stop() {
      stopped = true;
      await Promise.all(runs);
    },
  };
}

// PostgreSQL only: the embedded database lives in the process and can't be cut off from it.
describe.runIf(process.env.DATABASE_URL)('losing the database under ACME load', () => {
  let cluster: ThrowawayCluster;
  let env: AcmeTestEnv;
  const log = captureLog('info');

  beforeAll(async () => {
    cluster = await startThrowawayCluster();
    env = await startAcmeEnv({ store: await cluster.store(), log: log.logger });
  });
  afterAll(async () => {
    await env?.close();
    await env?.ca.store.cleanup();
    await cluster?.destroy();
  });

  it('fails requests with 503 while it is gone, serves again once it is back (no restart), and loses or duplicates nothing', async () => {
    const clients = await Promise.all([1, 2, 3, 4].map(() => env.client()));
    for (const c of clients) await c.createAccount({ termsOfServiceAgreed: true });
    const account = clients[0]!.getAccountUrl();
    const load = startLoad(env, clients);
    try {
      await load.waitFor(4);

      // Every session ended under load, twice: requests in flight fail, the process stays up.
      expect(await cluster.terminateBackends()).toBeGreaterThan(0);
      await sleep(300);
      await cluster.terminateBackends();
      await load.waitFor(4);

      // The server goes away (an immediate stop, like a crash or a failover) and comes back.
      cluster.stop();
      await sleep(500);
      const down = await postAsGet(clients[0]!, account);
      expect(down.status).toBe(503);
      expect(down.headers['retry-after']).toBe('2');
      expect(down.headers['content-type']).toBe('application/problem+json');
      expect(down.body).toMatchObject({ type: 'urn:ietf:params:acme:error:serverInternal' });
      await sleep(1_500);
      cluster.start();
      // The same server, not restarted: its pool opens new connections on demand. (How soon is a
      // matter for benchmarks; the bound here only keeps a broken reconnect from hanging the test.)
      const back = Date.now();
      let status = 0;
      while (status !== 200 && Date.now() - back < 20_000) {
        status = (await postAsGet(clients[0]!, account)).status;
        if (status !== 200) await sleep(50);
      }
      expect(status).toBe(200);
      await load.waitFor(4);
    } finally {
      await load.stop();
    }

    // Nothing a client received is missing from the database, and nothing is there twice.
    const db = env.ca.ctx.database.db;
    const rows = await db.selectFrom('certificates').select('serial').execute();
    const stored = new Set(rows.map((r) => r.serial));
    expect(stored.size).toBe(rows.length);
    expect(load.received.filter((s) => !stored.has(s))).toEqual([]);
    expect(new Set(load.received).size).toBe(load.received.length);
    // Every order that became valid names a stored certificate of its own.
    const valid = await db
      .selectFrom('acme_orders')
      .select('certificate_serial')
      .where('status', '=', 'valid')
      .execute();
    expect(valid.every((o) => o.certificate_serial !== null && stored.has(o.certificate_serial))).toBe(true);
    expect(new Set(valid.map((o) => o.certificate_serial)).size).toBe(valid.length);
    // The loss was a logged outage of requests, not a crash or a 500.
    expect(log.withMessage('database unavailable').length > 0).toBe(true);
    expect(log.withMessage('request failed')).toEqual([]);
  });
});

/** A POST-as-GET of the account (RFC 8555 §6.3): it reads the database. */
async function postAsGet(client: acme.Client, url: string) {
  const resp = await internals(client).api.apiRequest(url, null);
  return { status: resp.status, headers: resp.headers, body: resp.data };
}
