import { createPrivateKey, createPublicKey } from 'node:crypto';

import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { x509 } from '../../src/ca/x509.ts';
import {
  type AcmeTestEnv,
  internals,
  issue,
  publish,
  type RawKey,
  request,
  resolveToLoopback,
  signJws,
  startAcmeEnv,
} from '../support/acme.ts';

let env: AcmeTestEnv;
beforeAll(async () => {
  env = await startAcmeEnv();
});
afterAll(async () => env?.close());

async function newClient(): Promise<acme.Client> {
  const client = await env.client();
  await client.createAccount({ termsOfServiceAgreed: true });
  return client;
}

/** An order whose authorizations are all valid, as a client sees it just before finalizing. */
async function readyOrder(client: acme.Client, names: string[]): Promise<acme.Order> {
  resolveToLoopback(env, ...names);
  const order = await client.createOrder({ identifiers: names.map((value) => ({ type: 'dns', value })) });
  for (const authz of await client.getAuthorizations(order)) {
    if (authz.status === 'valid') continue;
    const ch = await publish(env, client, authz, 'http-01');
    await client.completeChallenge(ch);
    await client.waitForValidStatus(ch);
  }
  return order;
}

async function csrFor(names: string[], keyPem?: Buffer, commonName?: string): Promise<string> {
  const [, csrPem] = await acme.crypto.createCsr(
    { altNames: names, ...(commonName ? { commonName } : {}) },
    keyPem ?? (await acme.crypto.createPrivateEcdsaKey()),
  );
  return Buffer.from(acme.crypto.getPemBodyAsB64u(csrPem), 'base64url').toString('base64url');
}

const problemType = (data: { type?: string }) => data.type?.split(':').pop();

describe('finalize', () => {
  it('the order is ready as soon as its challenge is valid; finalize answers valid with Location', async () => {
    const client = await newClient();
    const order = await readyOrder(client, ['fin.example.test']);
    const res = await internals(client).api.apiRequest(order.finalize, { csr: await csrFor(['fin.example.test']) });
    expect(res.status).toBe(200);
    expect(['processing', 'valid']).toContain(res.data.status);
    expect(res.headers.location).toBe(order.url);
    const cert = await internals(client).api.apiRequest(String(res.data.certificate), null, [200]);
    expect(cert.headers['content-type']).toBe('application/pem-certificate-chain');
    const again = await internals(client).api.apiRequest(order.finalize, { csr: await csrFor(['fin.example.test']) });
    expect([again.status, again.data.type]).toEqual([403, 'urn:ietf:params:acme:error:orderNotReady']);
  });

  it('refuses bad CSRs with badCSR and leaves the order ready for a good one', async () => {
    const client = await newClient();
    const order = await readyOrder(client, ['csr.example.test', 'csr2.example.test']);
    const cases: [string, string][] = [
      ['garbage', Buffer.from('not a csr').toString('base64url')],
      ['missing a name', await csrFor(['csr.example.test'])],
      ['an extra name', await csrFor(['csr.example.test', 'csr2.example.test', 'evil.example.test'])],
      [
        'a CN outside the order',
        await csrFor(['csr.example.test', 'csr2.example.test'], undefined, 'other.example.test'),
      ],
      ['the account key', await csrFor(['csr.example.test', 'csr2.example.test'], internals(client).opts.accountKey)],
    ];
    for (const [what, csr] of cases) {
      const res = await internals(client).api.apiRequest(order.finalize, { csr });
      expect({ what, status: res.status, type: problemType(res.data) }).toEqual({ what, status: 400, type: 'badCSR' });
    }
    expect((await client.getOrder(order)).status).toBe('ready');
    const ok = await internals(client).api.apiRequest(order.finalize, {
      csr: await csrFor(['csr2.example.test', 'csr.example.test'], undefined, 'csr.example.test'),
    });
    expect(ok.status).toBe(200);
  });

  it('concurrent finalize requests issue exactly one certificate and none answers ready', async () => {
    const client = await newClient();
    const order = await readyOrder(client, ['race.example.test']);
    const csr = await csrFor(['race.example.test']);
    const results = await Promise.all(
      Array.from({ length: 5 }, () => internals(client).api.apiRequest(order.finalize, { csr })),
    );
    for (const r of results) {
      if (r.status === 200) expect(['processing', 'valid']).toContain(r.data.status);
      else expect(problemType(r.data)).toBe('orderNotReady');
    }
    const accountId = client.getAccountUrl().split('/').pop();
    const rows = await env.ca.ctx.database.db
      .selectFrom('certificates')
      .select('serial')
      .where('requester', '=', `acme:${accountId}`)
      .execute();
    expect(rows).toHaveLength(1);
    const final = await client.waitForValidStatus(order);
    expect(final.certificate).toContain(rows[0]!.serial);
  });

  it('honours notAfter from the order in the certificate', async () => {
    const client = await newClient();
    const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 2 * 3_600_000);
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'short.example.test' }], 'http-01', {
      notAfter: notAfter.toISOString(),
    });
    const leaf = new x509.X509Certificate(certPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!);
    expect(Math.abs(leaf.notAfter.getTime() - notAfter.getTime())).toBeLessThanOrEqual(2_000);
  });
});

function certDer(certPem: string): Buffer {
  return Buffer.from(acme.crypto.getPemBodyAsB64u(certPem), 'base64url');
}

async function certKey(keyPem: Buffer): Promise<RawKey> {
  const privateKey = createPrivateKey(keyPem);
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  const { importPKCS8 } = await import('jose');
  const pkcs8 = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return {
    privateKey: (await importPKCS8(pkcs8, 'ES256', { extractable: true })) as CryptoKey,
    jwk: jwk as RawKey['jwk'],
    alg: 'ES256',
  };
}

describe('revokeCert', () => {
  const revokeUrl = () => `${env.ca.httpsUrl}/acme/revoke-cert`;

  it('by the ordering account; a second time is alreadyRevoked; reason 7 is badRevocationReason', async () => {
    const client = await newClient();
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'rev1.example.test' }], 'http-01');
    const bad = await internals(client).api.apiRequest(revokeUrl(), {
      certificate: certDer(certPem).toString('base64url'),
      reason: 7,
    });
    expect([bad.status, problemType(bad.data)]).toEqual([400, 'badRevocationReason']);
    await client.revokeCertificate(certPem, { reason: 4 });
    const serial = new x509.X509Certificate(
      certPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!,
    ).serialNumber.toLowerCase();
    const row = await env.ca.ctx.database.db
      .selectFrom('certificates')
      .select(['status', 'revocation_reason'])
      .where('serial', '=', serial)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ status: 'revoked', revocation_reason: 4 });
    const again = await internals(client).api.apiRequest(revokeUrl(), {
      certificate: certDer(certPem).toString('base64url'),
    });
    expect([again.status, problemType(again.data)]).toEqual([400, 'alreadyRevoked']);
  });

  it('by a JWS signed with the certificate key (jwk)', async () => {
    const client = await newClient();
    const { certPem, keyPem } = await issue(env, client, [{ type: 'dns', value: 'rev2.example.test' }], 'http-01');
    const key = await certKey(keyPem);
    const nonce = String((await request(env, 'HEAD', `${env.ca.httpsUrl}/acme/new-nonce`)).headers['replay-nonce']);
    const body = await signJws(
      key,
      { certificate: certDer(certPem).toString('base64url') },
      { alg: 'ES256', nonce, url: revokeUrl(), jwk: key.jwk },
    );
    const res = await request(env, 'POST', revokeUrl(), {
      headers: { 'content-type': 'application/jose+json' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
    expect(res.body).toBe('');
  });

  it('by another account only when it holds valid authorizations for every name', async () => {
    const owner = await newClient();
    const { certPem } = await issue(
      env,
      owner,
      [
        { type: 'dns', value: 'rev3.example.test' },
        { type: 'dns', value: 'rev4.example.test' },
      ],
      'http-01',
    );
    const other = await newClient();
    await readyOrder(other, ['rev3.example.test']);
    const partial = await internals(other).api.apiRequest(revokeUrl(), {
      certificate: certDer(certPem).toString('base64url'),
    });
    expect([partial.status, problemType(partial.data)]).toEqual([403, 'unauthorized']);
    await readyOrder(other, ['rev4.example.test']);
    await other.revokeCertificate(certPem);
  });
});

describe('replaces (RFC 9773)', () => {
  it('is stored and echoed; replacing the same certificate twice is alreadyReplaced', async () => {
    const client = await newClient();
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'ari.example.test' }], 'http-01');
    const leaf = new x509.X509Certificate(certPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!);
    const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!;
    let serialHex = leaf.serialNumber;
    if (parseInt(serialHex.slice(0, 2), 16) >= 0x80) serialHex = `00${serialHex}`;
    const certId = `${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from(serialHex, 'hex').toString('base64url')}`;
    // The issuer half counts too: a made-up key identifier with the right serial names no certificate of ours.
    const madeUp = `${Buffer.alloc(20, 7).toString('base64url')}.${certId.split('.')[1]}`;
    await expect(
      client.createOrder({ identifiers: [{ type: 'dns', value: 'ari.example.test' }], replaces: madeUp } as Parameters<
        acme.Client['createOrder']
      >[0]),
    ).rejects.toThrow(/did not issue/);
    // Only the account the certificate was issued to may replace it, and only with a name it shares.
    const other = await newClient();
    await expect(
      other.createOrder({ identifiers: [{ type: 'dns', value: 'ari.example.test' }], replaces: certId } as Parameters<
        acme.Client['createOrder']
      >[0]),
    ).rejects.toThrow(/another account/);
    await expect(
      client.createOrder({
        identifiers: [{ type: 'dns', value: 'elsewhere.example.test' }],
        replaces: certId,
      } as Parameters<acme.Client['createOrder']>[0]),
    ).rejects.toThrow(/shares no identifier/);
    const order = await client.createOrder({
      identifiers: [{ type: 'dns', value: 'ari.example.test' }],
      replaces: certId,
    } as Parameters<acme.Client['createOrder']>[0]);
    expect((order as { replaces?: string }).replaces).toBe(certId);
    await expect(
      client.createOrder({ identifiers: [{ type: 'dns', value: 'ari.example.test' }], replaces: certId } as Parameters<
        acme.Client['createOrder']
      >[0]),
    ).rejects.toThrow(/already been replaced/);
  });
});
