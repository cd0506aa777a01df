import { X509Certificate } from 'node:crypto';
import type { Server } from 'node:net';

import * as acme from 'acme-client';
import { calculateJwkThumbprint } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  type AcmeTestEnv,
  issue,
  type RawKey,
  rawKey,
  request,
  resolveToLoopback,
  signJws,
  startAcmeEnv,
} from '../support/acme.ts';
import { portOf, roundRobin } from '../support/balancer.ts';
import { freePort } from '../support/ca.ts';

// PGlite admits one process, so two servers on one database need PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('two replicas on one database', () => {
  let a: AcmeTestEnv;
  let b: AcmeTestEnv;
  let lb: { server: Server; hits: number[] };

  beforeAll(async () => {
    const publicPort = await freePort();
    a = await startAcmeEnv({ publicPort });
    b = await startAcmeEnv({ publicPort, store: a.ca.store, shared: a });
    lb = await roundRobin(publicPort, [portOf(a.ca.server!.httpsUrl), portOf(b.ca.server!.httpsUrl)]);
  });
  afterAll(async () => {
    lb?.server.close();
    await b?.close();
    await a?.close();
  });

  const direct = (env: AcmeTestEnv) => env.ca.server!.httpsUrl.replace('localhost', '127.0.0.1');
  /** POSTs signed by `key` for the public URL both replicas advertise, sent to one replica's own port. */
  const poster = (key: RawKey) => async (env: AcmeTestEnv, url: string, payload: unknown, who: { kid?: string }) => {
    const nonce = String((await request(env, 'HEAD', `${direct(env)}/acme/new-nonce`)).headers['replay-nonce']);
    const jws = await signJws(key, payload, { alg: key.alg, nonce, url, ...(who.kid ? who : { jwk: key.jwk }) });
    return request(env, 'POST', url.replace(a.ca.httpsUrl, direct(env)), {
      headers: { 'content-type': 'application/jose+json' },
      body: JSON.stringify(jws),
    });
  };

  it('a nonce from one replica is accepted once by the other', async () => {
    const key = await rawKey();
    const nonceFromA = String((await request(a, 'HEAD', `${direct(a)}/acme/new-nonce`)).headers['replay-nonce']);
    // The signed url is the public one both replicas advertise.
    const url = `${a.ca.httpsUrl}/acme/new-account`;
    const body = JSON.stringify(await signJws(key, {}, { alg: key.alg, nonce: nonceFromA, url, jwk: key.jwk }));
    const atB = await request(b, 'POST', `${direct(b)}/acme/new-account`, {
      headers: { 'content-type': 'application/jose+json' },
      body,
    });
    expect(atB.status).toBe(201);
    const replayAtA = await request(a, 'POST', `${direct(a)}/acme/new-account`, {
      headers: { 'content-type': 'application/jose+json' },
      body,
    });
    expect(replayAtA.json().type).toBe('urn:ietf:params:acme:error:badNonce');
  });

  it('a challenge POSTed to the replica that did not serve its authorization is checked at once there, and a certificate downloads from either', async () => {
    const key = await rawKey();
    const post = poster(key);
    const kid = String((await post(a, `${a.ca.httpsUrl}/acme/new-account`, {}, {})).headers.location);
    const name = 'other-replica.example.test';
    resolveToLoopback(a, name);
    const order = await post(
      a,
      `${a.ca.httpsUrl}/acme/new-order`,
      { identifiers: [{ type: 'dns', value: name }] },
      { kid },
    );
    const authzUrl = (order.json().authorizations as string[])[0]!;
    const authz = (await post(a, authzUrl, '', { kid })).json() as {
      challenges: { type: string; url: string; token: string }[];
    };
    const challenge = authz.challenges.find((c) => c.type === 'http-01')!;
    a.http01.set(challenge.token, `${challenge.token}.${await calculateJwkThumbprint(key.jwk)}`);

    const res = await post(b, challenge.url, {}, { kid });
    expect(res.json()).toMatchObject({ status: 'valid', type: 'http-01' });
    // Checked within the grace period: only the outcome was written, no job to carry the check.
    const jobs = await a.ca.ctx.database.db
      .selectFrom('acme_jobs')
      .select('id')
      .where('authz_id', '=', authzUrl.split('/').pop()!)
      .execute();
    expect(jobs).toEqual([]);

    // Finalized on A, downloaded from B, which did not issue it (it reads the certificate with its
    // nonce's spend); sent together with other accounts' and unknown downloads, each gets its own.
    const [, csr] = await acme.crypto.createCsr({ altNames: [name] });
    const der = Buffer.from(csr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64url');
    const finalized = await post(a, String(order.json().finalize), { csr: der }, { kid });
    expect(finalized.json().status).toBe('valid');
    const certUrl = String(finalized.json().certificate);
    const otherKey = await rawKey();
    const asOther = async (env: AcmeTestEnv, url: string, payload: unknown, otherKid?: string) => {
      const nonce = String((await request(env, 'HEAD', `${direct(env)}/acme/new-nonce`)).headers['replay-nonce']);
      const header = otherKid ? { kid: otherKid } : { jwk: otherKey.jwk };
      const jws = await signJws(otherKey, payload, { alg: otherKey.alg, nonce, url, ...header });
      return request(env, 'POST', url.replace(a.ca.httpsUrl, direct(env)), {
        headers: { 'content-type': 'application/jose+json' },
        body: JSON.stringify(jws),
      });
    };
    const otherKid = String((await asOther(b, `${a.ca.httpsUrl}/acme/new-account`, {})).headers.location);
    const [mine, theirs, unknown] = await Promise.all([
      post(b, certUrl, '', { kid }),
      asOther(b, certUrl, '', otherKid),
      post(b, certUrl.replace(/[^/]+$/, 'ab12'), '', { kid }),
    ]);
    expect(mine.status).toBe(200);
    expect(mine.headers['content-type']).toBe('application/pem-certificate-chain');
    const leaf = new X509Certificate(String(mine.body).split(/(?<=-----END CERTIFICATE-----\n)/)[0]!);
    expect(leaf.subjectAltName).toBe(`DNS:${name}`);
    expect([theirs.status, theirs.json().type]).toEqual([403, 'urn:ietf:params:acme:error:unauthorized']);
    expect(unknown.status).toBe(404);
  });

  it('finalizes of one order sent to both replicas at once issue one certificate; the others hear it is not ready', async () => {
    const key = await rawKey();
    const post = poster(key);
    const kid = String((await post(a, `${a.ca.httpsUrl}/acme/new-account`, {}, {})).headers.location);
    const name = 'raced-replicas.example.test';
    resolveToLoopback(a, name);
    const order = (
      await post(a, `${a.ca.httpsUrl}/acme/new-order`, { identifiers: [{ type: 'dns', value: name }] }, { kid })
    ).json() as { authorizations: string[]; finalize: string; url: string };
    const authz = (await post(b, order.authorizations[0]!, '', { kid })).json() as {
      challenges: { type: string; url: string; token: string }[];
    };
    const challenge = authz.challenges.find((c) => c.type === 'http-01')!;
    a.http01.set(challenge.token, `${challenge.token}.${await calculateJwkThumbprint(key.jwk)}`);
    expect((await post(a, challenge.url, {}, { kid })).json().status).toBe('valid');

    const [, csr] = await acme.crypto.createCsr({ altNames: [name] });
    const der = Buffer.from(csr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64url');
    const results = await Promise.all([a, b, a, b].map((env) => post(env, order.finalize, { csr: der }, { kid })));
    const outcomes = results.map((r) => (r.status === 200 ? r.json().status : r.json().type));
    expect(outcomes.filter((o) => o === 'valid')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'urn:ietf:params:acme:error:orderNotReady')).toHaveLength(3);
    const issued = await a.ca.ctx.database.db
      .selectFrom('certificates')
      .select('serial')
      .where('requester', '=', `acme:${kid.split('/').pop()}`)
      .execute();
    expect(issued).toHaveLength(1);
  });

  it('serves one client flow whose requests alternate between the replicas', async () => {
    const client = await a.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const before = [...lb.hits];
    const { order, certPem } = await issue(a, client, [{ type: 'dns', value: 'replicas.example.test' }], 'http-01');
    expect(order.status).toBe('valid');
    expect(certPem).toContain('BEGIN CERTIFICATE');
    expect(lb.hits[0]! - before[0]!).toBeGreaterThan(3);
    expect(lb.hits[1]! - before[1]!).toBeGreaterThan(3);
  });
});
