import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestCa, type TestCa } from '../support/ca.ts';
import { kmsCli } from './helpers.ts';

interface Client {
  key?: string;
  cert?: string;
}

describe('data-key API over mTLS', () => {
  let ca: TestCa;
  let app: Client;
  let stranger: Client;

  async function clientCert(uri: string | undefined, dns: string): Promise<Client> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const issued = await ca.ctx.ca.issue({
      subjectPublicKeyInfo: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
      keyType: 'ecdsa-p256',
      sans: { dns: [dns], ip: [], uri: uri ? [uri] : [], email: [] },
      profile: 'mtls',
      requester: 'test',
    });
    return { key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: issued.chainPem };
  }

  function call(
    client: Client,
    path: string,
    body: unknown,
  ): Promise<{ status: number; type: string; json: Record<string, unknown>; raw: string }> {
    const url = new URL(`/kms/v1/${path}`, ca.httpsUrl);
    const payload = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          ca: ca.rootPem,
          key: client.key,
          cert: client.cert,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          let raw = '';
          res.on('data', (d: Buffer) => (raw += d.toString()));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              type: String(res.headers['content-type']),
              json: JSON.parse(raw) as Record<string, unknown>,
              raw,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  beforeAll(async () => {
    ca = await startTestCa();
    app = await clientCert('spiffe://keyward.test/app', 'app.internal');
    stranger = await clientCert(undefined, 'stranger.internal');
    await kmsCli(ca.ctx, ['kms', 'create-key'], { allow: ['spiffe://keyward.test/app'] }, ['app-secrets']);
    await kmsCli(ca.ctx, ['kms', 'create-key'], { allow: ['spiffe://keyward.test/*'] }, ['archive']);
  });
  afterAll(async () => {
    await ca.close();
  });

  it('refuses a client without a certificate from this CA, as problem+json', async () => {
    const r = await call({}, 'encrypt', { keyId: 'app-secrets', plaintext: 'aGk=' });
    expect(r.status).toBe(401);
    expect(r.type).toContain('application/problem+json');
  });

  it('generate-data-key and decrypt with the encryption context bound as AAD', async () => {
    const ctxA = { tenant: 'a', table: 'users' };
    const g = await call(app, 'generate-data-key', {
      keyId: 'app-secrets',
      keySpec: 'AES_256',
      encryptionContext: ctxA,
    });
    expect(g.status, g.raw).toBe(200);
    const plaintext = Buffer.from(g.json.plaintext as string, 'base64');
    expect(plaintext).toHaveLength(32);
    expect(g.json.keyVersion).toBe(1);
    const blob = Buffer.from(g.json.ciphertextBlob as string, 'base64');
    expect(blob.subarray(0, 4).toString()).toBe('KWE1');
    expect(blob[5]).toBe(0x04);
    // Context order doesn't matter; its content does.
    const d = await call(app, 'decrypt', {
      ciphertextBlob: g.json.ciphertextBlob,
      encryptionContext: { table: 'users', tenant: 'a' },
    });
    expect(d.status, d.raw).toBe(200);
    expect(Buffer.from(d.json.plaintext as string, 'base64').equals(plaintext)).toBe(true);
    const wrong = await call(app, 'decrypt', {
      ciphertextBlob: g.json.ciphertextBlob,
      encryptionContext: { tenant: 'b', table: 'users' },
    });
    expect(wrong.status).toBe(400);
    expect(wrong.json).toMatchObject({ code: 'InvalidCiphertext' });
    const without = await call(app, 'generate-data-key-without-plaintext', {
      keyId: 'app-secrets',
      encryptionContext: ctxA,
    });
    expect(without.json.plaintext).toBeUndefined();
    expect(without.json.ciphertextBlob).toBeTypeOf('string');
    const reserved = await call(app, 'encrypt', {
      keyId: 'app-secrets',
      plaintext: 'aGk=',
      encryptionContext: { 'kw:key': 'x' },
    });
    expect(reserved.status).toBe(400);
  });

  it('encrypt/decrypt survive rotation: the ciphertext names key and version', async () => {
    const secret = randomBytes(100);
    const e1 = await call(app, 'encrypt', {
      keyId: 'app-secrets',
      plaintext: secret.toString('base64'),
      encryptionContext: { purpose: 'test' },
    });
    expect(e1.status, e1.raw).toBe(200);
    await kmsCli(ca.ctx, ['kms', 'rotate'], {}, ['app-secrets']);
    const e2 = await call(app, 'encrypt', {
      keyId: 'app-secrets',
      plaintext: secret.toString('base64'),
      encryptionContext: { purpose: 'test' },
    });
    expect([e1.json.keyVersion, e2.json.keyVersion]).toEqual([1, 2]);
    for (const e of [e1, e2]) {
      const d = await call(app, 'decrypt', {
        ciphertextBlob: e.json.ciphertextBlob,
        encryptionContext: { purpose: 'test' },
        keyId: 'app-secrets',
      });
      expect(Buffer.from(d.json.plaintext as string, 'base64').equals(secret)).toBe(true);
    }
    const big = await call(app, 'encrypt', { keyId: 'app-secrets', plaintext: randomBytes(4097).toString('base64') });
    expect(big.status).toBe(400);
    expect(big.json.detail).toMatch(/larger than 4096 bytes/);
  });

  it('policy: others are denied and audited; the plaintext is never echoed or logged', async () => {
    const secret = Buffer.from('top secret value 12345');
    const e = await call(app, 'encrypt', {
      keyId: 'app-secrets',
      plaintext: secret.toString('base64'),
      encryptionContext: { who: 'app' },
    });
    const r = await call(stranger, 'decrypt', {
      ciphertextBlob: e.json.ciphertextBlob,
      encryptionContext: { who: 'app' },
    });
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ code: 'AccessDenied' });
    expect(r.json.detail).toMatch(/no statement allows decrypt to stranger\.internal/);
    const events = await ca.ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('principal', '=', 'stranger.internal')
      .execute();
    expect(events).toEqual([
      expect.objectContaining({ action: 'decrypt', outcome: 'denied', error_code: 'AccessDenied' }),
    ]);
    const all = JSON.stringify(await ca.ctx.database.db.selectFrom('audit_events').select('context').execute());
    expect(all).not.toContain(secret.toString('base64'));
    expect(all).toContain('"ec:who":"app"');

    // Conditions on the encryption context, and an explicit deny that wins over the allow.
    const file = join(ca.store.dataDir, 'app-policy.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        statements: [
          {
            effect: 'allow',
            principals: ['spiffe://keyward.test/app'],
            actions: ['encrypt', 'decrypt'],
            conditions: { context: { who: ['app'] } },
          },
          { effect: 'deny', principals: ['*'], actions: ['decrypt'], conditions: { context: { frozen: ['*'] } } },
        ],
      }),
    );
    await kmsCli(ca.ctx, ['kms', 'put-policy'], { file }, ['app-secrets']);
    expect(
      (await call(app, 'encrypt', { keyId: 'app-secrets', plaintext: 'aGk=', encryptionContext: { who: 'other' } }))
        .status,
    ).toBe(403);
    const frozen = await call(app, 'encrypt', {
      keyId: 'app-secrets',
      plaintext: 'aGk=',
      encryptionContext: { who: 'app', frozen: '1' },
    });
    expect(frozen.status).toBe(200);
    expect(
      (
        await call(app, 'decrypt', {
          ciphertextBlob: frozen.json.ciphertextBlob,
          encryptionContext: { who: 'app', frozen: '1' },
        })
      ).json.code,
    ).toBe('AccessDenied');
  });

  it('re-encrypt moves a ciphertext to another key and context; a disabled key refuses', async () => {
    const e = await call(app, 'encrypt', {
      keyId: 'archive',
      plaintext: Buffer.from('move me').toString('base64'),
      encryptionContext: { a: '1' },
    });
    const r = await call(app, 're-encrypt', {
      ciphertextBlob: e.json.ciphertextBlob,
      sourceEncryptionContext: { a: '1' },
      destinationKeyId: 'archive',
      destinationEncryptionContext: { b: '2' },
    });
    expect(r.status, r.raw).toBe(200);
    const d = await call(app, 'decrypt', { ciphertextBlob: r.json.ciphertextBlob, encryptionContext: { b: '2' } });
    expect(Buffer.from(d.json.plaintext as string, 'base64').toString()).toBe('move me');
    await kmsCli(ca.ctx, ['kms', 'disable'], {}, ['archive']);
    const refused = await call(app, 'decrypt', {
      ciphertextBlob: r.json.ciphertextBlob,
      encryptionContext: { b: '2' },
    });
    expect(refused.status).toBe(409);
    expect(refused.json.detail).toMatch(/data key archive is Disabled/);
    await kmsCli(ca.ctx, ['kms', 'enable'], {}, ['archive']);
  });
});
