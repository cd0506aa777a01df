import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEabKey } from '../../src/acme/eab.ts';
import { secretBox } from '../../src/acme/wrap-secrets.ts';
import { type AcmeTestEnv, internals, rawKey, request, signedPost, startAcmeEnv } from '../support/acme.ts';

const TOS = 'https://ca.example.test/tos';

describe('accounts', () => {
  let env: AcmeTestEnv;
  beforeAll(async () => {
    env = await startAcmeEnv();
  });
  afterAll(async () => env?.close());

  const newAccountUrl = () => `${env.ca.httpsUrl}/acme/new-account`;

  it('creates with 201 + Location, returns 200 + the same Location for a known key, ignoring new fields', async () => {
    const key = await rawKey();
    const first = await signedPost(env, newAccountUrl(), key, { contact: ['mailto:a@example.test'] });
    expect(first.status).toBe(201);
    const location = String(first.headers.location);
    expect(location).toMatch(new RegExp(`^${env.ca.httpsUrl}/acme/acct/[A-Za-z0-9_-]+$`));
    expect(first.json()).toMatchObject({
      status: 'valid',
      contact: ['mailto:a@example.test'],
      orders: `${location}/orders`,
    });
    const again = await signedPost(env, newAccountUrl(), key, {
      contact: ['mailto:b@example.test'],
      onlyReturnExisting: false,
      foo: 1,
    });
    expect(again.status).toBe(200);
    expect(again.headers.location).toBe(location);
    expect(again.json().contact).toEqual(['mailto:a@example.test']);
    expect(again.json()).not.toHaveProperty('onlyReturnExisting');
    const lookup = await signedPost(env, newAccountUrl(), key, { onlyReturnExisting: true });
    expect(lookup.status).toBe(200);
    expect(lookup.headers.location).toBe(location);
  });

  it('onlyReturnExisting for an unknown key is accountDoesNotExist and creates nothing', async () => {
    const key = await rawKey();
    const res = await signedPost(env, newAccountUrl(), key, { onlyReturnExisting: true });
    expect(res.status).toBe(400);
    expect(res.json().type).toBe('urn:ietf:params:acme:error:accountDoesNotExist');
    const create = await signedPost(env, newAccountUrl(), key, {});
    expect(create.status).toBe(201);
  });

  it.each([
    ['tel:+15551234', 'unsupportedContact'],
    ['mailto:a@example.test?subject=x', 'invalidContact'],
    ['mailto:', 'invalidContact'],
    ['mailto:a@example.test,b@example.test', 'invalidContact'],
  ])('refuses contact %s with %s', async (contact, type) => {
    const res = await signedPost(env, newAccountUrl(), await rawKey(), { contact: [contact] });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json().type).toBe(`urn:ietf:params:acme:error:${type}`);
  });

  it('accepts RS256, ES384 and EdDSA account keys', async () => {
    for (const alg of ['RS256', 'ES384', 'EdDSA'] as const) {
      const res = await signedPost(env, newAccountUrl(), await rawKey(alg), {});
      expect(res.status, alg).toBe(201);
    }
  });

  it('updates contacts; POST {} and POST-as-GET return the account', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true, contact: ['mailto:one@example.test'] });
    const updated = await client.updateAccount({ contact: ['mailto:two@example.test'], termsOfServiceAgreed: true });
    expect(updated.contact).toEqual(['mailto:two@example.test']);
    const url = client.getAccountUrl();
    const viaEmpty = await internals(client).api.apiRequest(url, {}, [200]);
    expect(viaEmpty.data.contact).toEqual(['mailto:two@example.test']);
    const viaGet = await internals(client).api.apiRequest(url, null, [200]);
    expect(viaGet.data.status).toBe('valid');
  });

  it('lists the account orders', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'list.example.test' }] });
    const account = await internals(client).api.apiRequest(client.getAccountUrl(), null, [200]);
    const list = await internals(client).api.apiRequest(String(account.data.orders), null, [200]);
    expect(list.data.orders).toEqual([order.url]);
  });

  it('deactivation: 200 with status deactivated, then every request with that key is unauthorized', async () => {
    const accountKey = await acme.crypto.createPrivateEcdsaKey();
    const client = await env.client({ accountKey });
    await client.createAccount({ termsOfServiceAgreed: true });
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'gone.example.test' }] });
    const res = await client.updateAccount({ status: 'deactivated' });
    expect(res.status).toBe('deactivated');
    await expect(client.createOrder({ identifiers: [{ type: 'dns', value: 'gone.example.test' }] })).rejects.toThrow(
      /deactivated/,
    );
    const fetchOrder = await internals(client).api.apiRequest(order.url, null);
    expect(fetchOrder.status).toBe(403);
    expect(fetchOrder.data.type).toBe('urn:ietf:params:acme:error:unauthorized');
    const again = await env.client({ accountKey });
    await expect(again.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/deactivated/);
  });

  it('keyChange: the new key works, the old one is refused, and a key in use is 409 with its Location', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const url = client.getAccountUrl();
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'roll.example.test' }] });
    const oldKey = internals(client).opts.accountKey;
    const newKey = await acme.crypto.createPrivateEcdsaKey();
    await client.updateAccountKey(newKey);
    // The pending order survives the roll-over and is reachable with the new key.
    expect((await client.getOrder(order)).status).toBe('pending');
    const withOld = await env.client({ accountKey: oldKey, accountUrl: url });
    await expect(withOld.getOrder(order)).rejects.toThrow();
    const lookupOld = await env.client({ accountKey: oldKey });
    await expect(lookupOld.createAccount({ onlyReturnExisting: true })).rejects.toThrow(/No account exists/);

    const other = await env.client();
    await other.createAccount({ termsOfServiceAgreed: true });
    const conflict = await client.updateAccountKey(internals(other).opts.accountKey).catch((e: unknown) => e as Error);
    expect(String(conflict)).toMatch(/already in use/);
    const raw = await internals(client).api.apiRequest(url, null, [200]);
    expect(raw.status).toBe(200);
  });

  it('keyChange: an inner JWS with a nonce, or a url differing from the outer one, is refused', async () => {
    const outer = await rawKey();
    const created = await signedPost(env, newAccountUrl(), outer, {});
    const kid = String(created.headers.location);
    const keyChangeUrl = `${env.ca.httpsUrl}/acme/key-change`;
    const next = await rawKey();
    const { signJws } = await import('../support/acme.ts');
    for (const innerHeader of [{ nonce: 'abc' }, { url: `${env.ca.httpsUrl}/acme/new-order` }]) {
      const inner = await signJws(
        next,
        { account: kid, oldKey: outer.jwk },
        { alg: next.alg, jwk: next.jwk, url: keyChangeUrl, ...innerHeader },
      );
      const res = await signedPost(env, keyChangeUrl, outer, inner, { jwk: undefined, kid });
      expect(res.status).toBe(400);
      expect(res.json().type).toBe('urn:ietf:params:acme:error:malformed');
    }
    const inner = await signJws(
      next,
      { account: kid, oldKey: outer.jwk },
      { alg: next.alg, jwk: next.jwk, url: keyChangeUrl },
    );
    const ok = await signedPost(env, keyChangeUrl, outer, inner, { jwk: undefined, kid });
    expect(ok.status).toBe(200);
  });
});

describe('terms of service and external account binding', () => {
  let env: AcmeTestEnv;
  beforeAll(async () => {
    env = await startAcmeEnv({ acme: { termsOfService: TOS, externalAccountRequired: true } });
  });
  afterAll(async () => env?.close());

  it('advertises both in the directory meta', async () => {
    const res = await request(env, 'GET', env.directoryUrl);
    expect(res.json().meta).toMatchObject({ termsOfService: TOS, externalAccountRequired: true });
  });

  it('refuses newAccount without termsOfServiceAgreed (userActionRequired + terms link)', async () => {
    const client = await env.client();
    const res = await signedPost(env, `${env.ca.httpsUrl}/acme/new-account`, await rawKey(), {});
    expect(res.status).toBe(403);
    expect(res.json().type).toBe('urn:ietf:params:acme:error:userActionRequired');
    expect(res.headers.link).toContain(`<${TOS}>;rel="terms-of-service"`);
    void client;
  });

  it('refuses newAccount without a binding (externalAccountRequired)', async () => {
    const client = await env.client();
    await expect(client.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/external account binding/);
  });

  it('accepts a valid binding once; lookups and re-registration of that key work without it', async () => {
    const db = env.ca.ctx.database.db;
    const eab = await createEabKey(secretBox(env.ca.ctx.kms), db, { label: 'team-a' });
    expect(eab.keyId).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(eab.hmacKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const accountKey = await acme.crypto.createPrivateEcdsaKey();
    const client = await env.client({ accountKey, externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    const account = await client.createAccount({ termsOfServiceAgreed: true });
    expect(account.status).toBe('valid');
    expect(account).toHaveProperty('externalAccountBinding');
    // cert-manager / x/crypto look the account up with onlyReturnExisting and no binding.
    const lookup = await env.client({ accountKey });
    const found = await lookup.createAccount({ onlyReturnExisting: true });
    expect(found.status).toBe('valid');
    expect(lookup.getAccountUrl()).toBe(client.getAccountUrl());
    // The same (spent) binding with the same key is just "account exists".
    const again = await env.client({ accountKey, externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    await again.createAccount({ termsOfServiceAgreed: true });
    expect(again.getAccountUrl()).toBe(client.getAccountUrl());
    // A spent binding cannot create a second account.
    const thief = await env.client({ externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    await expect(thief.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/already been used/);
  });

  it('refuses a binding with a wrong MAC key or an unknown key id', async () => {
    const db = env.ca.ctx.database.db;
    const eab = await createEabKey(secretBox(env.ca.ctx.kms), db, {});
    const other = await createEabKey(secretBox(env.ca.ctx.kms), db, {});
    const wrongMac = await env.client({ externalAccountBinding: { kid: eab.keyId, hmacKey: other.hmacKey } });
    await expect(wrongMac.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/MAC is invalid/);
    const unknown = await env.client({ externalAccountBinding: { kid: 'kw_nope', hmacKey: eab.hmacKey } });
    await expect(unknown.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/Unknown external account/);
    // The key that was refused above is still unspent.
    const ok = await env.client({ externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    expect((await ok.createAccount({ termsOfServiceAgreed: true })).status).toBe('valid');
  });
});
