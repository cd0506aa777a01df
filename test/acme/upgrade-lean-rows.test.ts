import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { calculateJwkThumbprint } from 'jose';
import { Migrator, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { migrations } from '../../migrations/index.ts';
import { openDatabase } from '../../src/db/connect.ts';
import {
  type AcmeJson,
  type AcmeTestEnv,
  type RawKey,
  rawKey,
  resolveToLoopback,
  signedPost,
  startAcmeEnv,
} from '../support/acme.ts';
import { createDatabase, dropDatabase, type TestStore } from '../support/db.ts';

/**
 * What 0018_order_authz_ids did, for the databases that ran it in the half hour it was on main
 * before 0018_lean_acme_rows replaced it (its file is now empty).
 */
const orderAuthzIds = () => [
  sql`ALTER TABLE acme_orders ADD COLUMN authz_ids text[] NOT NULL DEFAULT '{}'`,
  sql`ALTER TABLE acme_authzs ADD COLUMN validated_by text`,
  sql`INSERT INTO kysely_migration (name, timestamp) VALUES ('0018_order_authz_ids', ${new Date().toISOString()})`,
];

/**
 * Orders in flight when a CA moves to the lean ACME rows (migration 0018): their challenges were
 * rows of their own, with ids in the URLs clients already hold. After the upgrade a client can
 * finish them: the old challenge URL still validates, a check that was being retried is taken up
 * by the job, and both orders turn ready. From 0017, and from the 0018 that was replaced.
 */
describe.runIf(process.env.DATABASE_URL).each([
  { from: '0017_hot_path_references', extra: () => [] },
  { from: '0018_order_authz_ids', extra: orderAuthzIds },
])('an upgrade to challenges kept in their authorization, from $from', ({ extra }) => {
  const base = process.env.DATABASE_URL!;
  const name = `kw_${randomBytes(6).toString('hex')}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'kw-upgrade-'));
  let env: AcmeTestEnv;
  let key: RawKey;
  const accountId = 'acct-before-upgrade';
  const soon = new Date(Date.now() + 3_600_000);

  beforeAll(async () => {
    const url = await createDatabase(base, name);
    const handle = await openDatabase({ url, dataDir });
    const before = Object.fromEntries(Object.entries(migrations).filter(([n]) => n < '0018'));
    const migrated = await new Migrator({
      db: handle.db,
      provider: { getMigrations: async () => before },
    }).migrateToLatest();
    expect(migrated.error).toBeUndefined();
    for (const statement of extra()) await statement.execute(handle.db);
    key = await rawKey('ES256');
    const now = new Date();
    const db = handle.db;
    await sql`INSERT INTO acme_accounts (id, key_thumbprint, jwk, status, tos_agreed, created_at, updated_at)
      VALUES (${accountId}, ${await calculateJwkThumbprint(key.jwk)}, ${JSON.stringify(key.jwk)}::jsonb, 'valid', true,
        ${now}, ${now})`.execute(db);
    // order-a: one name, nothing attempted yet. order-b: two names; the first was being retried
    // (processing, a queued job due now), the second is still pending.
    const orders = [
      { id: 'order-a', authzs: [{ id: 'authz-a', name: 'old-a.example.test', attempted: undefined }] },
      {
        id: 'order-b',
        authzs: [
          { id: 'authz-b1', name: 'old-b1.example.test', attempted: 'http-01' },
          { id: 'authz-b2', name: 'old-b2.example.test', attempted: undefined },
        ],
      },
    ];
    for (const o of orders) {
      const identifiers = o.authzs.map((a) => ({ type: 'dns', value: a.name }));
      await sql`INSERT INTO acme_orders (id, account_id, status, expires, identifiers, profile, created_at, updated_at)
        VALUES (${o.id}, ${accountId}, 'pending', ${soon}, ${JSON.stringify(identifiers)}::jsonb, 'default', ${now}, ${now})`.execute(
        db,
      );
      for (const [position, a] of o.authzs.entries()) {
        await sql`INSERT INTO acme_authzs (id, account_id, identifier_type, identifier_value, wildcard, status, expires, created_at)
          VALUES (${a.id}, ${accountId}, 'dns', ${a.name}, false, 'pending', ${soon}, ${now})`.execute(db);
        for (const type of ['http-01', 'dns-01', 'tls-alpn-01']) {
          const status = a.attempted === type ? 'processing' : 'pending';
          await sql`INSERT INTO acme_challenges (id, authz_id, type, token, status)
            VALUES (${`${a.id}-old-${type}`}, ${a.id}, ${type}, ${`token-${a.id}-${type}`}, ${status})`.execute(db);
        }
        await sql`INSERT INTO acme_order_authzs (order_id, authz_id, position) VALUES (${o.id}, ${a.id}, ${position})`.execute(
          db,
        );
        if (a.attempted)
          await sql`INSERT INTO acme_jobs (id, challenge_id, status, run_at, deadline, attempts, created_at)
            VALUES (${`job-${a.id}`}, ${`${a.id}-old-${a.attempted}`}, 'queued', ${now}, ${soon}, 1, ${now})`.execute(
            db,
          );
      }
    }
    await handle.close();
    const store: TestStore = {
      dataDir,
      databaseUrl: url,
      env: { KEYWARD_DATA_DIR: dataDir, DATABASE_URL: url },
      open: () => openDatabase({ url, dataDir }),
      cleanup: async () => {
        rmSync(dataDir, { recursive: true, force: true });
        await dropDatabase(base, name);
      },
    };
    env = await startAcmeEnv({ store });
  });
  afterAll(async () => env?.close());

  const thumbprint = () => calculateJwkThumbprint(key.jwk);
  const post = async (path: string, payload: unknown) =>
    (
      await signedPost(env, `${env.ca.httpsUrl}/acme/${path}`, key, payload, {
        jwk: undefined,
        kid: `${env.ca.httpsUrl}/acme/acct/${accountId}`,
      })
    ).json() as AcmeJson & Record<string, unknown>;
  const answer = async (token: string, name: string) => {
    resolveToLoopback(env, name);
    env.http01.set(token, `${token}.${await thumbprint()}`);
  };

  it('shows an authorization made before with its challenges, tokens and order as they were', async () => {
    const authz = await post('authz/authz-a', '');
    expect(authz.status).toBe('pending');
    const challenges = authz.challenges as { type: string; token: string; status: string; url: string }[];
    expect(challenges.map((c) => [c.type, c.token, c.status])).toEqual([
      ['dns-01', 'token-authz-a-dns-01', 'pending'],
      ['http-01', 'token-authz-a-http-01', 'pending'],
      ['tls-alpn-01', 'token-authz-a-tls-alpn-01', 'pending'],
    ]);
    expect(challenges[1]!.url).toBe(`${env.ca.httpsUrl}/acme/chall/authz-a/http-01`);
    const order = await post('order/order-b', '');
    expect(order.authorizations).toEqual([
      `${env.ca.httpsUrl}/acme/authz/authz-b1`,
      `${env.ca.httpsUrl}/acme/authz/authz-b2`,
    ]);
  });

  it('validates a challenge POSTed at the URL handed out before the upgrade; its order turns ready', async () => {
    await answer('token-authz-a-http-01', 'old-a.example.test');
    const challenge = await post('chall/authz-a-old-http-01', {});
    expect(challenge.status).toBe('valid');
    expect(challenge.url).toBe(`${env.ca.httpsUrl}/acme/chall/authz-a/http-01`);
    expect((await post('order/order-a', '')).status).toBe('ready');
  });

  it('finishes a check that was being retried through its job, and the order turns ready with its other name', async () => {
    await answer('token-authz-b1-http-01', 'old-b1.example.test');
    let first: AcmeJson = {};
    for (let i = 0; i < 50 && first.status !== 'valid'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      first = await post('chall/authz-b1/http-01', '');
    }
    expect(first.status).toBe('valid');
    // The second name over dns-01, by its new URL.
    env.dns.setTxt('_acme-challenge.old-b2.example.test', [
      Buffer.from(
        await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`token-authz-b2-dns-01.${await thumbprint()}`)),
      ).toString('base64url'),
    ]);
    expect((await post('chall/authz-b2/dns-01', {})).status).toBe('valid');
    expect((await post('order/order-b', '')).status).toBe('ready');
  });
});
