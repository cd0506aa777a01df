import { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import https from 'node:https';

import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { commandsByName } from '../../src/cli/registry.ts';
import { loadConfig } from '../../src/config/load.ts';
import { openContext } from '../../src/context.ts';
import { CRASH_POINTS, type CrashPoint } from '../../src/core/crash-points.ts';
import type { DatabaseHandle } from '../../src/db/connect.ts';
import { createLogger } from '../../src/http/log.ts';
import { startServer } from '../../src/server.ts';
import { freePort, startTestCa, type TestCa } from '../support/ca.ts';
import { keywardServe } from '../support/cli.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const serialOf = (pem: string) => BigInt(`0x${new X509Certificate(pem).serialNumber}`).toString(16);

/**
 * What must be true of the crashed attempt's serial reservation once recovery has run. The key
 * use's audit event commits with the reservation, before the signature, so a reservation that
 * exists is one whose signature may have been made (`signed`): the database can't tell a crash
 * just before signing from one just after, and says so rather than "not signed".
 */
const EXPECTED: Record<CrashPoint, 'none' | { status: 'abandoned'; signed: boolean } | { status: 'issued' }> = {
  'finalize-decided': 'none',
  'serial-reserved': { status: 'abandoned', signed: true },
  'certificate-signed': { status: 'abandoned', signed: true },
  'certificate-stored': { status: 'issued' },
};

// kill -9 of a real `keyward serve` at each step of finalize, then a restart: the client's retry
// gets its certificate on the same order and the database accounts for every serial. The CA is
// made, and the restart after each crash runs, in this process (the same start-up recovery as the
// binary's, on a context opened afresh): only the crashing servers are processes of their own.
// PostgreSQL only: the embedded database's files are the process's own.
describe.runIf(process.env.DATABASE_URL)('a crash at each step of finalize', () => {
  let ca: TestCa;
  let dns: TestDnsServer;
  let responder: Server;
  const tokens = new Map<string, string>();
  let directoryUrl: string;
  const acmeSettings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings;
  const { retryMaxAttempts } = acmeSettings;
  const httpsAgent: unknown = acme.axios.defaults.httpsAgent;

  beforeAll(async () => {
    dns = await startTestDnsServer();
    const challengePort = await freePort();
    responder = createServer((req, res) => {
      const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1];
      const body = token === undefined ? undefined : tokens.get(token);
      res.writeHead(body === undefined ? 404 : 200).end(body ?? '');
    });
    await new Promise<void>((r) => responder.listen(challengePort, '127.0.0.1', r));
    ca = await startTestCa({
      serve: false,
      settings: {
        validation: { httpPort: challengePort, dnsResolver: dns.address, timeout: '2s', retryFor: '1s' },
        // A crash older than abandonAfter is recovered at the restart's start or its next sweep.
        recovery: { abandonAfter: '1s', interval: '1s' },
        log: { level: 'warn' },
      },
    });
    directoryUrl = `${ca.httpsUrl}/acme/directory`;
    acme.axios.defaults.httpsAgent = new https.Agent({ ca: ca.rootPem, keepAlive: false });
    // acme-client resends a request that met a dead connection (after 5 s, 10 s, …); the finalize
    // the crash cut off must fail at once, and its retry is the test's to make.
    acmeSettings.retryMaxAttempts = 0;
  });
  afterAll(async () => {
    // acme-client's settings are the process's, and a test worker runs other files after this one.
    acmeSettings.retryMaxAttempts = retryMaxAttempts;
    acme.axios.defaults.httpsAgent = httpsAgent;
    await ca?.close();
    await new Promise((r) => responder?.close(r));
    await dns?.close();
  });

  /** A restart: a context opened afresh on the CA's configuration, and its server started. */
  async function restart(): Promise<{ stop(): Promise<void> }> {
    const ctx = await openContext(loadConfig({ configFile: ca.configFile, env: { ...ca.env } }), { principal: 'test' });
    const server = await startServer(ctx, createLogger('silent'), commandsByName);
    return {
      stop: async () => {
        await server.close();
        await ctx.close();
      },
    };
  }

  it.each(CRASH_POINTS)(
    'after %s, the retried finalize gets a certificate and every serial is accounted for',
    async (step) => {
      const db = ca.ctx.database;
      const name = `${step}.crash.test`;
      dns.setA(name, '127.0.0.1');
      const client = new acme.Client({
        directoryUrl,
        accountKey: await acme.crypto.createPrivateEcdsaKey(),
        backoffAttempts: 30,
        backoffMin: 100,
        backoffMax: 500,
      });

      const crashing = await keywardServe([], { ...ca.env, KEYWARD_TEST_CRASH_AT: `${step}/acme:` });
      const died = new Promise<NodeJS.Signals | null>((r) => crashing.child.once('exit', (_code, signal) => r(signal)));
      await client.createAccount({ termsOfServiceAgreed: true });
      const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
      for (const authz of await client.getAuthorizations(order)) {
        const challenge = authz.challenges.find((c) => c.type === 'http-01')!;
        tokens.set(challenge.token, await client.getChallengeKeyAuthorization(challenge));
        await client.completeChallenge(challenge);
        await client.waitForValidStatus(challenge);
      }
      const key = await acme.crypto.createPrivateEcdsaKey();
      const [, csr] = await acme.crypto.createCsr({ altNames: [name] }, key);
      const before = new Date();
      const finalizing = client.finalizeOrder(order, csr).then(
        () => 'answered',
        (err: Error) => err.message,
      );
      expect(await died).toBe('SIGKILL');
      expect(await finalizing).not.toBe('answered');
      const crashed = await db.db
        .selectFrom('serial_reservations')
        .select(['serial', 'status'])
        .where('created_at', '>=', before)
        .execute();
      if (EXPECTED[step] === 'none') expect(crashed).toEqual([]);
      else expect(crashed).toHaveLength(1);

      // Restarted at once: recovery runs at start, or at its next sweep (every second) once the
      // crash is older than recovery.abandonAfter.
      const server = await restart();
      try {
        let current = await client.getOrder(order);
        // A few seconds more if the crashed replica held the janitor's lease.
        for (let i = 0; i < 300 && current.status === 'processing'; i++) {
          await sleep(100);
          current = await client.getOrder(order);
        }
        // Never invalid: the order went back to ready, or the certificate was stored before the crash.
        expect(current.status).toBe(step === 'certificate-stored' ? 'valid' : 'ready');
        if (current.status === 'ready') current = await client.finalizeOrder(current, csr);
        const pem = await client.getCertificate(current);
        const serial = serialOf(pem);
        const stored = await db.db
          .selectFrom('certificates')
          .select('serial')
          .where('serial', '=', serial)
          .executeTakeFirst();
        expect(stored?.serial).toBe(serial);

        // The crashed attempt's reservation: given up (noting whether it was signed), or issued.
        const want = EXPECTED[step];
        if (want !== 'none') {
          let row = await reservation(db, crashed[0]!.serial);
          for (let i = 0; i < 300 && row?.status === 'reserved'; i++) {
            await sleep(100);
            row = await reservation(db, crashed[0]!.serial);
          }
          expect(row).toMatchObject(want);
          if (want.status === 'issued') expect(crashed[0]!.serial).toBe(serial);
          else expect(row?.abandoned_at).toBeInstanceOf(Date);
        }
        const open = await db.db
          .selectFrom('serial_reservations')
          .select('serial')
          .where('status', '=', 'reserved')
          .execute();
        expect(open).toEqual([]);
      } finally {
        await server.stop();
      }
    },
    // A server start and an ACME order: on a machine shared with other suites, more than the default.
    120_000,
  );
});

function reservation(db: DatabaseHandle, serial: string) {
  return db.db
    .selectFrom('serial_reservations')
    .select(['status', 'signed', 'abandoned_at'])
    .where('serial', '=', serial)
    .executeTakeFirst();
}
