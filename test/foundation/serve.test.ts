import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort } from '../support/ca.ts';
import { cli, keywardServe, serveInProcess } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { opensslCsr, opensslText, opensslVerify } from '../support/openssl.ts';

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

// `keyward serve` as a user runs it: a child process, real listeners, SIGTERM to stop; the
// restart runs in this process.
// Each case starts `keyward serve` once or twice: more than the default on a machine shared with
// other suites.
describe('keyward serve', { timeout: 120_000 }, () => {
  let store: TestStore;
  let env: Record<string, string>;
  let httpsPort: number;
  let httpPort: number;

  beforeAll(async () => {
    store = await createTestStore();
    httpsPort = await freePort();
    httpPort = await freePort();
    const configFile = join(store.dataDir, 'keyward.yaml');
    writeFileSync(
      configFile,
      `https:\n  listen: 127.0.0.1:${httpsPort}\nhttp:\n  listen: 127.0.0.1:${httpPort}\nlog:\n  level: warn\n`,
    );
    env = { ...store.env, KEYWARD_CONFIG: configFile };
  });
  afterAll(async () => store.cleanup());

  it('initialises on first run, serves TLS with its own certificate, keeps the same CA after a restart', async () => {
    const first = await keywardServe(['--json'], env);
    const banner = JSON.parse(first.banner.trim().split('\n').pop()!);
    expect(banner.created).toBe(true);
    expect(banner.https).toBe(`https://localhost:${httpsPort}`);

    const roots = await fetch(`http://127.0.0.1:${httpPort}/roots.pem`);
    expect(roots.status).toBe(200);
    expect(roots.headers.get('content-type')).toBe('application/pem-certificate-chain');
    const rootPem = await roots.text();
    expect(opensslText(rootPem)).toContain('Keyward Root CA');
    const intermediates = await (await fetch(`http://127.0.0.1:${httpPort}/intermediates.pem`)).text();
    expect(opensslText(intermediates)).toContain('Keyward Intermediate CA');

    // The HTTPS listener's certificate chains to the root it serves, for the configured names.
    const health = await httpsGet(`https://localhost:${httpsPort}/health`, rootPem);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: 'ok' });
    const viaIp = await httpsGet(`https://127.0.0.1:${httpsPort}/health`, rootPem);
    expect(viaIp.status).toBe(200);

    // The CLI works while the server runs (through the admin socket when the database is embedded);
    // run in-process here: what is tested is the server's side.
    const { dir } = opensslCsr({ san: 'DNS:live.internal' });
    const issued = await cli(['issue', '--csr', join(dir, 'req.csr'), '--json'], env);
    expect(issued.code, issued.stderr).toBe(0);
    const { serial, chainPem } = JSON.parse(issued.stdout);
    expect(opensslVerify(rootPem, chainPem).ok).toBe(true);
    const listed = await cli(['certs', 'list', '--json'], env);
    expect(JSON.parse(listed.stdout).map((c: { serial: string }) => c.serial)).toContain(serial);

    if (!store.databaseUrl) {
      // The embedded database admits one process: a second server on the same data directory is
      // refused before it opens anything (in this process: the refusal, not the process, is tested).
      const refused = await cli(['serve'], env);
      expect(refused.code).toBe(4);
      expect(refused.stderr).toMatch(/another keyward serve is already running/);
    }

    expect(await first.stop()).toBe(0);

    // The restart in this process (what serve does, on a context opened afresh).
    const second = await serveInProcess(env);
    const again = second.banner;
    expect(again.created).toBe(false);
    expect(again.rootFingerprint).toBe(banner.rootFingerprint);
    const rootsAgain = await (await fetch(`http://127.0.0.1:${httpPort}/roots.pem`)).text();
    expect(rootsAgain).toBe(rootPem);
    const shown = await cli(['certs', 'show', serial, '--json'], env);
    expect(JSON.parse(shown.stdout).serial).toBe(serial);
    await second.stop();
  });

  it('stops at start-up with a message naming the file, the path and the problem', async () => {
    const bad = join(store.dataDir, 'bad.yaml');
    writeFileSync(bad, 'https:\n  listen: everywhere\nca:\n  root:\n    keyType: dsa-1024\n');
    const r = await cli(['serve', '--config', bad], store.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${bad}: https.listen: expected host:port`);
    expect(r.stderr).toContain(`${bad}: ca.root.keyType:`);
  });
});
