import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

import { opensslOcsp } from '../revocation/helpers.ts';
import { freePort } from '../support/ca.ts';
import { cli, keywardServe, serveInProcess } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { opensslCsr, tempDir } from '../support/openssl.ts';

/** GET over HTTPS trusting only `ca`, optionally with a client certificate. */
function get(url: string, ca: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function health(httpUrl: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${httpUrl}/health`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

// `keyward serve` starts sealed in a process of its own; its restarts run in this process
// (serveInProcess: what serve does, on a context opened afresh, so sealed again). More than the
// default timeout on a machine shared with other suites.
describe('a CA with a 3-of-5 shares root, served by `keyward serve`', { timeout: 120_000 }, () => {
  let store: TestStore;
  let env: Record<string, string>;
  let httpUrl: string;
  let httpsUrl: string;
  let serve: { stop(): Promise<unknown> } | undefined;
  const dir = tempDir('kw-sealed-');
  const shareFile = (i: number, set = 'shares') => join(dir, set, `share-${i}-of-5.txt`);

  beforeAll(async () => {
    store = await createTestStore();
    const httpsPort = await freePort();
    const httpPort = await freePort();
    httpUrl = `http://127.0.0.1:${httpPort}`;
    httpsUrl = `https://localhost:${httpsPort}`;
    const configFile = join(store.dataDir, 'keyward.yaml');
    writeFileSync(
      configFile,
      stringify({
        https: { listen: `127.0.0.1:${httpsPort}`, hostnames: ['localhost', '127.0.0.1'] },
        http: { listen: `127.0.0.1:${httpPort}` },
        profilesDir: join(process.cwd(), 'ca-config', 'profiles'),
        log: { level: 'silent' },
        rootOfTrust: { type: 'shares', threshold: 3, shares: 5 },
      }),
    );
    env = { ...store.env, KEYWARD_CONFIG: configFile };
  });
  afterAll(async () => {
    await serve?.stop();
    await store?.cleanup();
  });

  // Commands run in this process, as a `keyward` process would: `init` opens the database itself,
  // the rest reach the server through its admin socket.
  const run = (args: string[], input?: string) => cli(args, env, { input });

  it('init hands out 5 shares; serve starts sealed; unseal takes them one at a time through the admin socket', async () => {
    // Refused before it listens (in this process, as the binary would exit).
    const noRoot = await run(['serve']);
    expect(noRoot.code).toBe(4);
    expect(noRoot.stderr).toMatch(/there is no root yet: run keyward init first/);

    const init = await run(['init', '--share-dir', join(dir, 'shares')]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/Root of trust: 3 of 5 shares/);
    expect(init.stdout).toContain(shareFile(5));
    expect(init.stdout).not.toMatch(/keyward-share:/);

    serve = await keywardServe([], env);
    expect(await health(httpUrl)).toEqual({
      status: 503,
      body: { status: 'sealed', database: expect.any(String), unseal: { entered: 0, threshold: 3 } },
    });

    const first = await run(['unseal', '--share-file', shareFile(1)]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/sealed: 1 of 3 shares entered \(1\)/);

    // A damaged copy of share 2 is refused by name, and changes nothing.
    const bad = join(dir, 'bad-share-2.txt');
    const good = readFileSync(shareFile(2), 'utf8');
    const data = good.split(':')[5]!;
    writeFileSync(bad, good.replace(data, (data[0] === 'A' ? 'B' : 'A') + data.slice(1)));
    const refused = await run(['unseal', '--share-file', bad]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/share 2 of 5 is corrupt: its checksum does not match/);

    // From standard input, as a holder would paste it.
    const second = await run(['unseal'], readFileSync(shareFile(3), 'utf8'));
    expect(second.stdout).toMatch(/sealed: 2 of 3 shares entered \(1, 3\)/);
    const status = await run(['unseal', '--status', '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ sealed: true, entered: [1, 3], threshold: 3, count: 5 });
    expect((await health(httpUrl)).status).toBe(503);

    const third = await run(['unseal', '--share-file', shareFile(5)]);
    expect(third.stdout).toMatch(/The CA is unsealed \(shares 1, 3, 5\)/);
    await expect.poll(async () => (await health(httpUrl)).status, { timeout: 20_000 }).toBe(200);
  });

  let files: {
    root: string;
    inter: string;
    leaf: string;
    leafKey: string;
    adminCert: string;
    adminKey: string;
    client: string;
    clientKey: string;
  };

  it('once unsealed it issues; a restart is sealed again: OCSP still answers from its stored answers, ACME gets a 503 problem', async () => {
    const roots = await (await fetch(`${httpUrl}/roots.pem`)).text();
    const inter = await (await fetch(`${httpUrl}/intermediates.pem`)).text();
    const leafCsr = opensslCsr({ san: 'DNS:sealed.internal' });
    writeFileSync(join(dir, 'leaf.csr'), leafCsr.csrPem);
    const issued = await run(['issue', '--csr', join(dir, 'leaf.csr')]);
    expect(issued.code, issued.stderr).toBe(0);
    const adminCsr = opensslCsr({ subject: '/CN=Alice', san: 'email:alice@example.test' });
    writeFileSync(join(dir, 'admin.csr'), adminCsr.csrPem);
    const admin = await run(['issue', '--csr', join(dir, 'admin.csr'), '--profile', 'admin']);
    expect(admin.code, admin.stderr).toBe(0);
    const clientCsr = opensslCsr({ subject: '/CN=svc', san: 'DNS:svc.internal' });
    writeFileSync(join(dir, 'client.csr'), clientCsr.csrPem);
    const client = await run(['issue', '--csr', join(dir, 'client.csr'), '--profile', 'mtls']);
    expect(client.code, client.stderr).toBe(0);
    const write = (name: string, text: string) => (writeFileSync(join(dir, name), text), join(dir, name));
    files = {
      root: write('root.pem', roots),
      inter: write('inter.pem', inter),
      leaf: write('leaf.pem', issued.stdout),
      leafKey: write('leaf.key', leafCsr.keyPem),
      adminCert: write('admin.pem', admin.stdout),
      adminKey: write('admin.key', adminCsr.keyPem),
      client: write('client.pem', client.stdout),
      clientKey: write('client.key', clientCsr.keyPem),
    };
    const live = await opensslOcsp({ httpUrl }, files, ['-cert', files.leaf], ['-no_nonce']);
    expect(live.out).toMatch(/leaf\.pem: good/);
    expect(live.ok, live.out).toBe(true);

    await serve!.stop();
    serve = await serveInProcess(env);
    expect((await health(httpUrl)).body).toMatchObject({ status: 'sealed' });

    // The answer signed before the restart, served as stored; a nonce can't force a signature now.
    for (const nonce of [false, true]) {
      const cached = await opensslOcsp({ httpUrl }, files, ['-cert', files.leaf], nonce ? [] : ['-no_nonce']);
      expect(cached.out).toMatch(/Response verify OK/);
      expect(cached.out).toMatch(/leaf\.pem: good/);
    }
    expect((await fetch(`${httpUrl}/roots.pem`)).status).toBe(200);

    // The HTTPS listener serves the certificate kept from the unsealed run, so clients trust it.
    const directory = await get(`${httpsUrl}/acme/directory`, roots);
    expect(directory.status).toBe(503);
    expect(directory.headers['content-type']).toBe('application/problem+json');
    expect(directory.headers['retry-after']).toBe('30');
    expect(JSON.parse(directory.body)).toMatchObject({
      type: 'urn:ietf:params:acme:error:serverInternal',
      status: 503,
      detail: expect.stringMatching(/the CA is sealed/),
    });
    const issue = await run(['issue', '--csr', join(dir, 'leaf.csr')]);
    expect(issue.code).toBe(5); // try again later
    expect(issue.stderr).toMatch(/Sealed: the CA is sealed/);
  });

  it('the HTTPS admin endpoint takes a share from an admin certificate holder, and refuses other certificates', async () => {
    const https = (cert: string, key: string) => [
      '--admin-url',
      httpsUrl,
      '--admin-cert',
      cert,
      '--admin-key',
      key,
      '--admin-ca',
      files.root,
    ];
    const serverCert = await run(['unseal', ...https(files.leaf, files.leafKey), '--share-file', shareFile(2)]);
    expect(serverCert.code).toBe(1);
    expect(serverCert.stderr).toMatch(/the client certificate is not from this CA \(INVALID_PURPOSE\)/);
    // A client certificate of this CA, but not of the admin profile.
    const notAdmin = await run(['unseal', ...https(files.client, files.clientKey), '--share-file', shareFile(2)]);
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toMatch(/this certificate is not an admin certificate \(profile admin\)/);
    expect(JSON.parse((await run(['unseal', '--status', '--json'])).stdout)).toMatchObject({ entered: [] });
    const byAdmin = await run(['unseal', ...https(files.adminCert, files.adminKey), '--share-file', shareFile(2)]);
    expect(byAdmin.code, byAdmin.stderr).toBe(0);
    expect(byAdmin.stdout).toMatch(/sealed: 1 of 3 shares entered \(2\)/);
  });

  it('rekey-shares replaces the set (and opens the server it ran in): after a restart old shares are refused, the new ones unseal', async () => {
    const rekey = await run([
      'rekey-shares',
      '--share-file',
      shareFile(1),
      '--share-file',
      shareFile(4),
      '--share-file',
      shareFile(5),
      '--share-dir',
      join(dir, 'rekeyed'),
    ]);
    expect(rekey.code, rekey.stderr).toBe(0);
    expect(rekey.stdout).toMatch(/The shares of the previous set no longer unseal anything/);
    await expect.poll(async () => (await health(httpUrl)).status, { timeout: 20_000 }).toBe(200);
    await serve!.stop();
    serve = await serveInProcess(env);
    const old = await run(['unseal', '--share-file', shareFile(3)]);
    expect(old.code).toBe(1);
    expect(old.stderr).toMatch(/share 3 of 5 belongs to share set [0-9a-f]+, not the current set/);
    for (const i of [5, 2]) await run(['unseal', '--share-file', shareFile(i, 'rekeyed')]);
    const last = await run(['unseal', '--share-file', shareFile(4, 'rekeyed')]);
    expect(last.stdout).toMatch(/The CA is unsealed \(shares 2, 4, 5\)/);
    await expect.poll(async () => (await health(httpUrl)).status, { timeout: 20_000 }).toBe(200);
    const directory = await get(`${httpsUrl}/acme/directory`, readFileSync(files.root, 'utf8'));
    expect(directory.status).toBe(200);
    const audit = await run(['audit', 'list', '--json']);
    const actions = (JSON.parse(audit.stdout) as { action: string }[]).map((e) => e.action);
    expect(actions.filter((a) => a === 'unseal')).toHaveLength(3);
    expect(actions).toContain('rekey-shares');
    execFileSync('openssl', ['verify', '-CAfile', files.root, '-untrusted', files.inter, files.leaf]);
  });
});
