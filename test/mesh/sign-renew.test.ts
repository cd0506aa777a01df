import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseCsr } from '../../src/ca/csr.ts';
import { x509 } from '../../src/ca/x509.ts';
import { newKeyAndCsr } from '../../src/mesh/csr-client.ts';
import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { addRule, removeRule } from '../../src/policy/rules.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr, opensslVerify } from '../support/openssl.ts';
import { httpsJson } from './helpers.ts';

const ID = 'spiffe://prod.example/ns/pay/sa/api';

describe('mesh: bootstrap tokens, /v1/sign, /v1/renew, /v1/bundle', () => {
  let ca: TestCa;
  const deps = () => ({ config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance });
  const token = async (opts: { id?: string; dns?: string[]; now?: Date; ttlMs?: number } = {}) =>
    (
      await createBootstrapToken(deps(), {
        id: opts.id ?? ID,
        dns: opts.dns ?? ['api.pay.svc.cluster.local'],
        profile: 'mesh-test',
        principal: 'test',
        ...(opts.now ? { now: opts.now } : {}),
        ...(opts.ttlMs ? { ttlMs: opts.ttlMs } : {}),
      })
    ).token;
  const sign = (body: unknown) => httpsJson(`${ca.httpsUrl}/v1/sign`, { body, ca: ca.rootPem });

  beforeAll(async () => {
    ca = await startTestCa({
      settings: {
        profiles: {
          'mesh-test': {
            extKeyUsages: ['serverAuth', 'clientAuth'],
            defaultLifetime: '10m',
            maxLifetime: '1h',
            sanTypes: ['dns', 'ip', 'uri'],
          },
        },
        policy: { rules: [{ deny: 'spiffe://prod.example/ns/forbidden/**' }] },
      },
    });
  });
  afterAll(async () => ca?.close());

  it('keyward token create prints an ES256 JWT for the sign URL, signed by a wrapped provisioner key', async () => {
    const r = await cli(
      [
        'token',
        'create',
        '--id',
        ID,
        '--dns',
        'api.pay.svc.cluster.local',
        '--ttl',
        '5m',
        '--profile',
        'mesh-test',
        '--json',
      ],
      ca.env,
      { context: ca.ctx },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { token: string; audience: string; sans: { uri: string[]; dns: string[] } };
    expect(out.audience).toBe(`${ca.httpsUrl}/v1/sign`);
    expect(out.sans.uri).toEqual([ID]);
    const [h, p] = out.token
      .split('.')
      .slice(0, 2)
      .map((s) => JSON.parse(Buffer.from(s, 'base64url').toString()) as Record<string, unknown>);
    expect(h).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    expect(p).toMatchObject({ aud: out.audience, sub: ID, profile: 'mesh-test' });
    expect(typeof p!.jti).toBe('string');
    expect(Number(p!.exp) - Number(p!.iat)).toBe(300);
    const key = await ca.ctx.database.db
      .selectFrom('kms_keys')
      .select(['usage', 'key_ciphertext'])
      .where('usage', '=', 'provisioner')
      .execute();
    expect(key).toHaveLength(1);
    expect(key[0]!.key_ciphertext).not.toBeNull();
    const plain = await cli(['token', 'create', '--id', ID, '--profile', 'mesh-test'], ca.env, { context: ca.ctx });
    expect(plain.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  it('token create refuses names the policy refuses, naming the rule', async () => {
    const r = await cli(['token', 'create', '--id', 'spiffe://prod.example/ns/forbidden/sa/x'], ca.env, {
      context: ca.ctx,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('rejectedIdentifier');
    expect(r.stderr).toContain('deny uri spiffe://prod.example/ns/forbidden/** (global, rule config:0)');
  });

  it('token create decides names as /v1/sign will: the rules of the issuer that signs the profile apply too', async () => {
    const issuer = await ca.ctx.ca.issuerForProfile('mesh-test');
    const { rule } = await addRule(ca.ctx.database.db, {
      scope: `issuer:${issuer.id}`,
      effect: 'deny',
      pattern: 'spiffe://prod.example/ns/issuer-denied/**',
      principal: 'test',
    });
    try {
      const err = (await token({ id: 'spiffe://prod.example/ns/issuer-denied/sa/x', dns: [] }).catch(
        (e: unknown) => e,
      )) as { kind: string; subproblems: { detail: string }[] };
      expect(err.kind).toBe('rejectedIdentifier');
      expect(err.subproblems.map((p) => p.detail).join()).toContain(`issuer:${issuer.id}`);
    } finally {
      await removeRule(ca.ctx.database.db, rule.id);
    }
    expect(await token({ id: 'spiffe://prod.example/ns/issuer-denied/sa/x', dns: [] })).toMatch(/\./);
  });

  it("POST /v1/sign issues the token's names; the chain verifies; a reused token is refused", async () => {
    const t = await token();
    const { csrPem } = await newKeyAndCsr();
    const r = await sign({ csr: csrPem, token: t });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(opensslVerify(ca.rootPem, String(r.json.certificate)).ok).toBe(true);
    expect(r.json.caBundle).toBe(ca.rootPem);
    const leaf = new x509.X509Certificate(String(r.json.certificate).split(/(?<=-----END CERTIFICATE-----)/)[0]!);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(
      san.names
        .toJSON()
        .map((n) => n.value)
        .sort(),
    ).toEqual(['api.pay.svc.cluster.local', ID]);
    const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension)!;
    expect(eku.usages).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);

    const again = await sign({ csr: (await newKeyAndCsr()).csrPem, token: t });
    expect(again.status).toBe(401);
    expect(again.contentType).toContain('application/problem+json');
    expect(again.json).toMatchObject({ type: 'urn:ietf:params:acme:error:unauthorized' });
    expect(String(again.json.detail)).toContain('already used');
  });

  it('an expired token, a forged token and a token for another audience are refused', async () => {
    const expired = await token({ now: new Date(Date.now() - 10 * 60_000), ttlMs: 60_000 });
    const csr = (await newKeyAndCsr()).csrPem;
    const r = await sign({ csr, token: expired });
    expect(r.status).toBe(401);
    expect(String(r.json.detail)).toContain('expired');

    const good = await token();
    const [h, p, s] = good.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const forged = [
      h,
      Buffer.from(JSON.stringify({ ...claims, sans: { dns: ['evil.internal'], ip: [], uri: [], email: [] } })).toString(
        'base64url',
      ),
      s,
    ].join('.');
    expect((await sign({ csr, token: forged })).json.detail).toMatch(/signature verification failed/);
    const other = [
      h,
      Buffer.from(JSON.stringify({ ...claims, aud: 'https://elsewhere/v1/sign' })).toString('base64url'),
      s,
    ].join('.');
    expect((await sign({ csr, token: other })).status).toBe(401);
    expect((await sign({ csr })).json).toMatchObject({ type: 'urn:ietf:params:acme:error:malformed' });
  });

  it("the CSR may ask a subset of the token's names, nothing else; a refused request does not burn the token", async () => {
    const t = await token();
    const extra = opensslCsr({ san: `URI:${ID},DNS:other.internal` });
    const refused = await sign({ csr: extra.csrPem, token: t });
    expect(refused.status).toBe(400);
    expect(refused.json.type).toBe('urn:ietf:params:acme:error:rejectedIdentifier');
    expect(String(refused.json.detail)).toContain('other.internal');
    const subset = opensslCsr({ san: `URI:${ID}` });
    const ok = await sign({ csr: subset.csrPem, token: t });
    expect(ok.status, JSON.stringify(ok.json)).toBe(200);
    const row = await ca.ctx.ca.certificate(String(ok.json.serial));
    expect(row.sans).toEqual({ dns: [], ip: [], uri: [ID], email: [] });
    expect(parseCsr(subset.csrPem).sans.uri).toEqual([ID]);
  });

  it('a token is spent only with a certificate: a profile limit or a blocked key refuses the request and the token stays usable', async () => {
    const t = await token();
    const tokens = () => ca.ctx.database.db.selectFrom('mesh_tokens').select(['used_at', 'used_serial']);
    // The profile refuses the key (checked before anything is spent).
    const weak = opensslCsr({ keyArgs: ['-newkey', 'rsa:1024'], san: `URI:${ID}` });
    const r1 = await sign({ csr: weak.csrPem, token: t });
    expect(r1.status).toBe(400);
    expect(r1.json.type).toBe('urn:ietf:params:acme:error:badPublicKey');
    // The signing core refuses a key revoked for keyCompromise, in the statement that reserves the serial.
    const blocked = opensslCsr({ san: `URI:${ID}` });
    const spki = parseCsr(blocked.csrPem).subjectPublicKeyInfo;
    const { createHash } = await import('node:crypto');
    await ca.ctx.database.db
      .insertInto('blocked_keys')
      .values({ spki_sha256: createHash('sha256').update(spki).digest(), reason: 'keyCompromise', source_serial: null })
      .execute();
    const r2 = await sign({ csr: blocked.csrPem, token: t });
    expect(r2.status).toBe(400);
    expect(r2.json.type).toBe('urn:ietf:params:acme:error:badPublicKey');
    expect(String(r2.json.detail)).toContain('keyCompromise');

    const ok = await sign({ csr: (await newKeyAndCsr()).csrPem, token: t });
    expect(ok.status, JSON.stringify(ok.json)).toBe(200);
    const jti = JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;
    const row = await tokens().where('jti', '=', jti).executeTakeFirstOrThrow();
    expect(row.used_at).not.toBeNull();
    expect(row.used_serial).toBe(ok.json.serial);
  });

  it('a rule added after the token was minted refuses it at /v1/sign, naming the rule', async () => {
    const t = await token({ dns: ['db.pay.svc.cluster.local'] });
    const issuer = (await ca.ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!;
    const { rule } = await addRule(ca.ctx.database.db, {
      scope: `issuer:${issuer.id}`,
      effect: 'deny',
      pattern: 'db.pay.svc.cluster.local',
      principal: 'test',
    });
    const r = await sign({ csr: (await newKeyAndCsr()).csrPem, token: t });
    expect(r.status).toBe(400);
    expect(r.json.type).toBe('urn:ietf:params:acme:error:rejectedIdentifier');
    expect(r.json.subproblems).toEqual([
      {
        type: 'urn:ietf:params:acme:error:rejectedIdentifier',
        identifier: { type: 'dns', value: 'db.pay.svc.cluster.local' },
        detail: expect.stringContaining(`rule ${rule.id}`),
      },
    ]);
    await removeRule(ca.ctx.database.db, rule.id);
    expect((await sign({ csr: (await newKeyAndCsr()).csrPem, token: t })).status).toBe(200);
  });

  it('POST /v1/renew over mTLS gives the same identity a new certificate; revoked, expired, foreign and missing certificates cannot renew', async () => {
    const first = await newKeyAndCsr();
    const issued = await sign({ csr: first.csrPem, token: await token() });
    expect(issued.status).toBe(200);
    const renew = (key: string | undefined, cert: string | undefined) =>
      httpsJson(`${ca.httpsUrl}/v1/renew`, { body: { csr: next.csrPem }, ca: ca.rootPem, key, cert });
    const next = await newKeyAndCsr();
    const renewed = await renew(first.keyPem, String(issued.json.certificate));
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    const oldRow = await ca.ctx.ca.certificate(String(issued.json.serial));
    const newRow = await ca.ctx.ca.certificate(String(renewed.json.serial));
    expect(newRow.sans).toEqual(oldRow.sans);
    expect(newRow.profile).toBe('mesh-test');
    expect(Buffer.from(newRow.spki_sha256).equals(Buffer.from(oldRow.spki_sha256))).toBe(false);

    // No client certificate at all.
    const anonymous = await renew(undefined, undefined);
    expect(anonymous.status).toBe(401);
    expect(String(anonymous.json.detail)).toContain('client certificate');

    // Revoked: refused even though the certificate is otherwise valid.
    await ca.ctx.ca.revoke(String(renewed.json.serial), 1, 'test');
    const revoked = await renew(next.keyPem, String(renewed.json.certificate));
    expect(revoked.status).toBe(401);
    expect(String(revoked.json.detail)).toContain('revoked');

    // Expired: a one-second certificate, one and a half seconds later.
    const short = await newKeyAndCsr();
    const parsed = parseCsr(short.csrPem);
    const brief = await ca.ctx.ca.issue({
      subjectPublicKeyInfo: parsed.subjectPublicKeyInfo,
      keyType: 'ecdsa-p256',
      sans: { dns: [], ip: [], uri: [ID], email: [] },
      profile: 'mesh-test',
      lifetimeMs: 1000,
      requester: 'mesh:test',
    });
    await new Promise((r) => setTimeout(r, 1500));
    const expired = await renew(short.keyPem, brief.chainPem);
    expect(expired.status).toBe(401);
    expect(String(expired.json.detail)).toContain('expired');

    // Not from the mesh flow (e.g. ACME or `keyward issue`): refused.
    const other = await newKeyAndCsr();
    const foreign = await ca.ctx.ca.issue({
      subjectPublicKeyInfo: parseCsr(other.csrPem).subjectPublicKeyInfo,
      keyType: 'ecdsa-p256',
      sans: { dns: ['x.internal'], ip: [], uri: [], email: [] },
      profile: 'mtls',
      requester: 'cli:someone',
    });
    const refused = await renew(other.keyPem, foreign.chainPem);
    expect(refused.status).toBe(403);
  });

  it('GET /v1/bundle is a SPIFFE trust bundle of the roots', async () => {
    const r = await httpsJson(`${ca.httpsUrl}/v1/bundle`, { ca: ca.rootPem });
    expect(r.status).toBe(200);
    const keys = r.json.keys as Array<Record<string, unknown>>;
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ kty: 'EC', crv: 'P-384', use: 'x509-svid' });
    const der = Buffer.from((keys[0]!.x5c as string[])[0]!, 'base64');
    expect(ca.rootPem).toContain(der.toString('base64').slice(0, 64));
    expect(r.json.spiffe_refresh_hint).toBe(300);
    expect(Number(r.json.spiffe_sequence)).toBeGreaterThan(0);
  });

  it('keyward policy add/list/remove manage scoped rules', async () => {
    const add = await cli(
      ['policy', 'add', '--scope', 'account:acct-7', '--allow', '*.svc.cluster.local', '--json'],
      ca.env,
      { context: ca.ctx },
    );
    expect(add.code, add.stderr).toBe(0);
    const { rule } = JSON.parse(add.stdout) as { rule: { id: string; kind: string } };
    expect(rule.kind).toBe('dns');
    const bad = await cli(['policy', 'add', '--scope', 'global', '--deny', '10.0.0.0/99'], ca.env, { context: ca.ctx });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('not an IP address or CIDR');
    const both = await cli(['policy', 'add', '--allow', 'a.internal', '--deny', 'b.internal'], ca.env, {
      context: ca.ctx,
    });
    expect(both.code).toBe(2);
    const list = await cli(['policy', 'list', '--json'], ca.env, { context: ca.ctx });
    const rules = JSON.parse(list.stdout) as Array<{ id: string; source: string }>;
    expect(rules.map((r) => r.id)).toEqual(expect.arrayContaining(['config:0', rule.id]));
    const text = await cli(['policy', 'list'], ca.env, { context: ca.ctx });
    expect(text.stdout).toMatch(/account:acct-7\s+allow\s+dns\s+\*\.svc\.cluster\.local/);
    expect((await cli(['policy', 'remove', rule.id], ca.env, { context: ca.ctx })).code).toBe(0);
    expect((await cli(['policy', 'remove', rule.id], ca.env, { context: ca.ctx })).code).toBe(1);
  });
});
