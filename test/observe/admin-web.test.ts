import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, resolveToLoopback, startAcmeEnv } from '../support/acme.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr, opensslVerify, tempDir } from '../support/openssl.ts';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

// The admin web page at /admin on the HTTPS listener, over real TLS with and without client
// certificates (the browser test, admin-browser.test.ts, drives it in chromium).
describe('admin web page: who gets in, and forms only from the page itself', () => {
  let ca: TestCa;
  let dir: string;
  let admin: { cert: string; key: string; serial: string };
  let service: { cert: string; key: string };
  const origin = () => new URL(ca.httpsUrl).origin;

  const call = (
    path: string,
    opts: {
      method?: string;
      client?: { cert: string; key: string };
      headers?: Record<string, string>;
      body?: string;
    } = {},
  ): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = request(
        `${ca.httpsUrl}${path}`,
        {
          method: opts.method ?? 'GET',
          ca: ca.rootPem,
          ...(opts.client ? { cert: opts.client.cert, key: opts.client.key } : {}),
          headers: opts.headers,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    });
  const postForm = (path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
    call(path, {
      method: 'POST',
      client: admin,
      body: new URLSearchParams(fields).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    });

  beforeAll(async () => {
    ca = await startTestCa();
    dir = tempDir('kw-admin-web-');
    const made = await cli(
      ['admin-cert', 'create', '--email', 'alice@example.test', '--out', join(dir, 'alice'), '--json'],
      ca.env,
      { context: ca.ctx },
    );
    expect(made.code, made.stderr).toBe(0);
    const out = JSON.parse(made.stdout) as { serial: string; principal: string; files: { key: string; cert: string } };
    admin = {
      cert: readFileSync(out.files.cert, 'utf8'),
      key: readFileSync(out.files.key, 'utf8'),
      serial: out.serial,
    };
    const csr = opensslCsr({ subject: '/CN=svc', san: 'DNS:svc.internal' });
    writeFileSync(join(dir, 'svc.csr'), csr.csrPem);
    const svc = await cli(['issue', '--csr', join(dir, 'svc.csr'), '--profile', 'mtls'], ca.env, { context: ca.ctx });
    expect(svc.code, svc.stderr).toBe(0);
    service = { cert: svc.stdout, key: csr.keyPem };
  });
  afterAll(async () => ca.close());

  it('admin-cert create writes a key that stays on this host, a certificate with the admin profile, and the roots', async () => {
    const files = join(dir, 'alice');
    expect(statSync(join(files, 'admin.key')).mode & 0o777).toBe(0o600);
    expect(opensslVerify(readFileSync(join(files, 'ca.pem'), 'utf8'), admin.cert).ok).toBe(true);
    const shown = await cli(['certs', 'show', admin.serial, '--json'], ca.env, { context: ca.ctx });
    expect(JSON.parse(shown.stdout)).toMatchObject({ profile: 'admin', sans: { email: ['alice@example.test'] } });
    // The request that crossed to the CA carried the public key only.
    const audit = await cli(['audit', 'list', '--json', '--limit', '1000'], ca.env, { context: ca.ctx });
    expect(audit.stdout).not.toContain('PRIVATE KEY');

    const again = await cli(['admin-cert', 'create', '--email', 'bob@example.test', '--out', files], ca.env, {
      context: ca.ctx,
    });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`${join(files, 'admin.key')} exists`);
    const bad = await cli(['admin-cert', 'create', '--email', 'not an address', '--out', join(dir, 'x')], ca.env, {
      context: ca.ctx,
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--email');
  });

  it('without a certificate, or with a certificate that is not an admin certificate, the page says so and shows nothing', async () => {
    const issuer = (await ca.ctx.ca.issuers())[0]!.subject;
    for (const path of ['/admin', '/admin/certificates', '/admin/keys', '/admin/audit', '/admin/acme']) {
      const none = await call(path);
      expect(none.status, path).toBe(401);
      expect(none.body).toContain('Administrators only');
      expect(none.body).toContain('keyward admin-cert create');
      expect(none.body).not.toContain(issuer);
      expect(none.body).not.toContain('/admin/certificates"'); // no navigation either
      const other = await call(path, { client: service });
      expect(other.status).toBe(403);
      expect(other.body).toContain('this certificate is not an admin certificate');
      expect(other.body).not.toContain(issuer);
    }
    const page = await call('/admin', { client: admin });
    expect(page.status).toBe(200);
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.body).toContain(issuer);
    expect(page.body).toContain('signed in as admin:alice@example.test');
  });

  it('a change from another origin is refused and changes nothing; from the page, it asks, then revokes, audited', async () => {
    const csr = opensslCsr({ san: 'DNS:victim.internal' });
    writeFileSync(join(dir, 'victim.csr'), csr.csrPem);
    await cli(['issue', '--csr', join(dir, 'victim.csr')], ca.env, { context: ca.ctx });
    const found = await call('/admin/certificates?q=victim.internal', { client: admin });
    const serial = /\/admin\/certificates\/([0-9a-f]+)"/.exec(found.body)?.[1];
    expect(serial).toBeDefined();
    const path = `/admin/certificates/${serial}/revoke`;

    const forged = await postForm(
      path,
      { reason: 'keyCompromise', confirm: 'yes' },
      { origin: 'https://evil.example' },
    );
    expect(forged.status).toBe(403);
    const crossSite = await postForm(
      path,
      { reason: 'keyCompromise', confirm: 'yes' },
      { origin: origin(), 'sec-fetch-site': 'cross-site' },
    );
    expect(crossSite.status).toBe(403);
    const noOrigin = await postForm(path, { reason: 'keyCompromise', confirm: 'yes' });
    expect(noOrigin.status).toBe(403);
    expect((await ca.ctx.ca.certificate(serial!)).status).toBe('valid');

    const ask = await postForm(path, { reason: 'keyCompromise' }, { origin: origin() });
    expect(ask.status).toBe(200);
    expect(ask.body).toContain('Revoke this certificate?');
    expect(ask.body).toContain('victim.internal');
    expect((await ca.ctx.ca.certificate(serial!)).status).toBe('valid');

    const done = await postForm(path, { reason: 'keyCompromise', confirm: 'yes' }, { origin: origin() });
    expect(done.status).toBe(303);
    expect(done.headers.location).toBe(`/admin/certificates/${serial}?done=revoked`);
    expect((await ca.ctx.ca.certificate(serial!)).status).toBe('revoked');
    const audit = await cli(['audit', 'list', '--json', '--limit', '1000'], ca.env, { context: ca.ctx });
    const events = JSON.parse(audit.stdout) as { action: string; principal: string; context: { serial?: string } }[];
    expect(events).toContainEqual(
      expect.objectContaining({
        action: 'revoke-certificate',
        principal: 'admin:alice@example.test',
        context: expect.objectContaining({ serial }),
      }),
    );

    const revoked = await call(`/admin/certificates?state=revoked&q=${serial}`, { client: admin });
    expect(revoked.body).toContain(serial);
    const valid = await call(`/admin/certificates?state=valid&q=victim`, { client: admin });
    expect(valid.body).not.toContain(serial);
  });

  it('bad input gets a page naming it', async () => {
    const badState = await call('/admin/certificates?state=sleepy', { client: admin });
    expect(badState.status).toBe(400);
    expect(badState.body).toContain('state must be one of any, valid, revoked, expired');
    const badSerial = await call('/admin/certificates/zz-top', { client: admin });
    expect(badSerial.status).toBe(400);
    const unknown = await call('/admin/certificates/abcdef', { client: admin });
    expect(unknown.status).toBe(404);
    expect(unknown.body).toContain('no certificate with serial abcdef');
  });

  it('the audit log pages back from the newest event', async () => {
    const rows = (body: string) => [...body.matchAll(/<tr><td>(\d+)<\/td>/g)].map((m) => Number(m[1]));
    const newest = rows((await call('/admin/audit', { client: admin })).body);
    expect(newest.length).toBeGreaterThan(3);
    expect(newest).toEqual([...newest].sort((a, b) => b - a));
    const head = newest[0]!;
    const older = rows((await call(`/admin/audit?before=${head - 2}`, { client: admin })).body);
    expect(older[0]).toBe(head - 3);
    expect(older.every((seq) => seq < head - 2)).toBe(true);
    const bad = await call('/admin/audit?before=abc', { client: admin });
    expect(bad.status).toBe(400);
    expect(bad.body).toContain('must be an event number');
  });

  it('a revoked admin certificate gets in no more', async () => {
    const other = await cli(
      ['admin-cert', 'create', '--email', 'carol@example.test', '--out', join(dir, 'carol'), '--json'],
      ca.env,
      { context: ca.ctx },
    );
    const out = JSON.parse(other.stdout) as { serial: string; files: { key: string; cert: string } };
    const carol = { cert: readFileSync(out.files.cert, 'utf8'), key: readFileSync(out.files.key, 'utf8') };
    expect((await call('/admin', { client: carol })).status).toBe(200);
    expect((await cli(['revoke', out.serial], ca.env, { context: ca.ctx })).code).toBe(0);
    const after = await call('/admin', { client: carol });
    expect(after.status).toBe(403);
    expect(after.body).toContain('the admin certificate is revoked');
  });
});

describe('admin web overview: validation failures', () => {
  let env: AcmeTestEnv;
  beforeAll(async () => {
    env = await startAcmeEnv();
  });
  afterAll(async () => env?.close());

  it('the overview shows a challenge that failed, with its problem; the ACME page deactivates the account, audited', async () => {
    const dir = tempDir('kw-admin-web-');
    const made = await cli(['admin-cert', 'create', '--email', 'ops@example.test', '--out', dir], env.ca.env, {
      context: env.ca.ctx,
    });
    expect(made.code, made.stderr).toBe(0);
    const client = {
      cert: readFileSync(join(dir, 'admin.pem'), 'utf8'),
      key: readFileSync(join(dir, 'admin.key'), 'utf8'),
    };
    const overview = () =>
      new Promise<string>((resolve, reject) => {
        request(`${env.ca.httpsUrl}/admin`, { ca: env.ca.rootPem, ...client }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(body));
        })
          .on('error', reject)
          .end();
      });
    expect(await overview()).toContain('None in the last 24 hours.');

    const acme = await env.client();
    await acme.createAccount({ termsOfServiceAgreed: true });
    resolveToLoopback(env, 'nobody-answers.internal');
    const order = await acme.createOrder({ identifiers: [{ type: 'dns', value: 'nobody-answers.internal' }] });
    const [authz] = await acme.getAuthorizations(order);
    const challenge = authz!.challenges.find((c) => c.type === 'http-01')!;
    await acme.completeChallenge(challenge); // nothing is published at the token's URL
    await expect(acme.waitForValidStatus(challenge)).rejects.toThrow();

    const page = await overview();
    expect(page).not.toContain('None in the last 24 hours.');
    expect(page).toMatch(/<b class="warn">1<\/b>validation failures/);
    expect(page).toContain('nobody-answers.internal');
    expect(page).toContain('http-01');
    expect(page).toContain('<code>unauthorized</code>');

    // The same account, deactivated from the ACME page: asked first, then done, then refused.
    const id = acme.getAccountUrl().split('/').pop()!;
    const post = (path: string, body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        request(
          `${env.ca.httpsUrl}${path}`,
          {
            method: 'POST',
            ca: env.ca.rootPem,
            ...client,
            headers: {
              'content-type': 'application/x-www-form-urlencoded',
              origin: new URL(env.ca.httpsUrl).origin,
            },
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (text += d));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          },
        )
          .on('error', reject)
          .end(body);
      });
    const ask = await post(`/admin/acme/accounts/${id}/deactivate`, '');
    expect(ask.body).toContain('Deactivate this ACME account?');
    await acme.createOrder({ identifiers: [{ type: 'dns', value: 'still.internal' }] });
    expect((await post(`/admin/acme/accounts/${id}/deactivate`, 'confirm=yes')).status).toBe(303);
    await expect(acme.createOrder({ identifiers: [{ type: 'dns', value: 'after.internal' }] })).rejects.toThrow(
      /Account is deactivated/,
    );
    const audit = await cli(['audit', 'list', '--json', '--limit', '1000'], env.ca.env, { context: env.ca.ctx });
    expect(JSON.parse(audit.stdout)).toContainEqual(
      expect.objectContaining({ action: 'deactivate-acme-account', principal: 'admin:ops@example.test' }),
    );
  });
});
