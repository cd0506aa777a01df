import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { opensslOcsp } from '../revocation/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr, tempDir } from '../support/openssl.ts';

// An operator in a real browser (Debian's chromium, driven by playwright-core) with the admin
// certificate `keyward admin-cert create` made: finds a certificate, revokes it, and OCSP says so.
// KEYWARD_ADMIN_SCREENSHOTS=docs/admin refreshes the screenshots in the docs.
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe('admin web page in chromium', { timeout: 180_000 }, () => {
  let ca: TestCa;
  let dir: string;
  let browser: Browser;
  let shots: string;
  let files: { root: string; inter: string; leaf: string };

  // Long pages (decoded certificate, audit log) only as far as the window shows.
  const shot = async (page: Page, name: string, fullPage = true) => {
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
  };

  beforeAll(async () => {
    ca = await startTestCa();
    dir = tempDir('kw-admin-browser-');
    shots = process.env.KEYWARD_ADMIN_SCREENSHOTS ? resolve(process.env.KEYWARD_ADMIN_SCREENSHOTS) : join(dir, 'shots');
    mkdirSync(shots, { recursive: true });
    const made = await cli(['admin-cert', 'create', '--email', 'alice@example.test', '--out', dir], ca.env, {
      context: ca.ctx,
    });
    expect(made.code, made.stderr).toBe(0);
    for (const name of ['shop', 'billing', 'search']) {
      const csr = opensslCsr({ subject: `/CN=${name}.internal`, san: `DNS:${name}.internal` });
      writeFileSync(join(dir, `${name}.csr`), csr.csrPem);
      const issued = await cli(['issue', '--csr', join(dir, `${name}.csr`)], ca.env, { context: ca.ctx });
      expect(issued.code, issued.stderr).toBe(0);
      if (name === 'shop') writeFileSync(join(dir, 'shop.pem'), issued.stdout);
    }
    const inter = await (await fetch(`${ca.httpUrl}/intermediates.pem`)).text();
    files = {
      root: join(dir, 'ca.pem'),
      inter: join(dir, 'inter.pem'),
      leaf: join(dir, 'shop.pem'),
    };
    writeFileSync(files.inter, inter);
    // launch() gives chromium a fresh temporary --user-data-dir of its own (it refuses one in args).
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await ca?.close();
  });

  it('an administrator logs in with the client certificate, searches, revokes with confirmation, and OCSP says revoked', async () => {
    const before = await opensslOcsp(ca, files, ['-cert', files.leaf]);
    expect(before.out).toMatch(/shop\.pem: good/);

    // The private root is not in chromium's trust store; the client certificate is the point here.
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [
        { origin: new URL(ca.httpsUrl).origin, certPath: join(dir, 'admin.pem'), keyPath: join(dir, 'admin.key') },
      ],
      viewport: { width: 1200, height: 800 },
    });
    const page = await context.newPage();
    const overview = await page.goto(`${ca.httpsUrl}/admin`);
    expect(overview?.status()).toBe(200);
    await expect.poll(() => page.textContent('header')).toContain('signed in as admin:alice@example.test');
    expect(await page.textContent('main')).toContain('Keyward Intermediate');
    await shot(page, 'overview');

    await page.click('a[href="/admin/certificates"]');
    await page.fill('input[name="q"]', 'shop.internal');
    await page.click('button:has-text("Search")');
    await page.waitForURL(/q=shop\.internal/);
    const rows = page.locator('main table tr');
    expect(await rows.count()).toBe(2); // the header and shop.internal
    await shot(page, 'certificates');

    await page.click('main table a');
    await page.waitForURL(/\/admin\/certificates\/[0-9a-f]+$/);
    expect(await page.textContent('main')).toContain('BEGIN CERTIFICATE');
    await page.selectOption('select[name="reason"]', 'keyCompromise');
    await shot(page, 'certificate', false);
    await page.click('button:has-text("Revoke…")');
    await expect.poll(() => page.textContent('h1')).toBe('Revoke this certificate?');
    expect(await page.textContent('main')).toContain('keyCompromise');
    await shot(page, 'revoke-confirm');
    await page.click('button.danger');
    await page.waitForURL(/done=revoked/);
    expect(await page.textContent('main')).toContain('reason keyCompromise');

    const after = await opensslOcsp(ca, files, ['-cert', files.leaf]);
    expect(after.out).toMatch(/shop\.pem: revoked/);
    expect(after.out).toMatch(/Reason: keyCompromise/);

    await page.goto(`${ca.httpsUrl}/admin/acme`);
    await page.fill('input[name="label"]', 'team-payments');
    await page.click('button:has-text("Create EAB key")');
    await expect.poll(() => page.textContent('#eab-kid')).toMatch(/^kw_/);
    expect(await page.textContent('#eab-hmac')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    await shot(page, 'acme');

    await page.goto(`${ca.httpsUrl}/admin/keys`);
    expect(await page.textContent('main')).toContain('ca-keys');
    await shot(page, 'keys');

    await page.goto(`${ca.httpsUrl}/admin/audit`);
    const audit = await page.textContent('main');
    expect(audit).toContain('revoke-certificate');
    expect(audit).toContain('create-eab-key');
    expect(audit).toContain('admin:alice@example.test');
    await page.click('a[href="/admin/audit/verify"]');
    await expect.poll(() => page.textContent('#verification')).toContain('The audit log is intact');
    await shot(page, 'audit', false);
    await context.close();
  });

  it('a browser without the admin certificate gets a page that says so, and no data', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    for (const path of ['/admin', '/admin/certificates?q=shop', '/admin/audit']) {
      const response = await page.goto(`${ca.httpsUrl}${path}`);
      expect(response?.status()).toBe(401);
      const text = await page.textContent('body');
      expect(text).toContain('Administrators only');
      expect(text).not.toContain('shop.internal');
      expect(text).not.toContain('Keyward Intermediate');
    }
    await shot(page, 'refused');
    expect(readFileSync(join(shots, 'refused.png')).subarray(1, 4).toString()).toBe('PNG');
    await context.close();
  });
});
