import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort } from '../support/ca.ts';
import { keyward, keywardServe } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { opensslText, opensslVerify, tempDir } from '../support/openssl.ts';

const run = promisify(execFile);

interface Outcome {
  code: number;
  output: string;
}

async function client(cmd: string, args: string[], env: Record<string, string>): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(cmd, args, {
      env: { ...process.env, ...env },
      timeout: 180_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const blocks = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
const derHex = (block: string) => Buffer.from(block.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64').toString('hex');

/** The issuer a leaf names in its AIA caIssuers URL (/issuers/<id>.cer). */
function issuerIdOf(pem: string): string {
  return /CA Issuers - URI:\S+\/issuers\/([0-9a-f]{16})\.cer/.exec(opensslText(pem))![1]!;
}

function serialOf(pem: string): string {
  const m = /Serial Number:\s*\n?\s*([0-9a-f:]+)/i.exec(opensslText(pem));
  return m![1]!.replace(/:/g, '').toLowerCase().replace(/^0+/, '');
}

// certbot and lego from Debian, unmodified, against `keyward serve`: register, issue over http-01
// and dns-01, renew, revoke. Names resolve through a test DNS server to 127.0.0.1.
describe('real ACME clients', () => {
  let store: TestStore;
  let dns: TestDnsServer;
  let control: Server;
  let controlPort: number;
  let serve: Awaited<ReturnType<typeof keywardServe>>;
  let env: Record<string, string>;
  let directory: string;
  let rootFile: string;
  let rootPem: string;
  let httpBase: string;
  let challengePort: number;
  const work = tempDir('kw-interop-');

  beforeAll(async () => {
    store = await createTestStore();
    dns = await startTestDnsServer();
    for (const name of [
      'certbot-http.test',
      'certbot-dns.test',
      'certbot-wrong.test',
      'lego-http.test',
      'lego-dns.test',
      'lego-wrong.test',
      'go-wrong.test',
      'certbot-rotate.test',
      'lego-rotate.test',
    ])
      dns.setA(name, '127.0.0.1');
    // Hooks of the clients publish TXT records through this endpoint.
    control = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const name = url.searchParams.get('name')!.replace(/\.$/, '');
      const value = url.searchParams.get('value');
      if (url.pathname === '/present' && value) dns.setTxt(name, [value]);
      else dns.clear(name);
      res.end('ok');
    });
    controlPort = await new Promise<number>((resolve) =>
      control.listen(0, '127.0.0.1', () => resolve((control.address() as { port: number }).port)),
    );

    const httpsPort = await freePort();
    const httpPort = await freePort();
    challengePort = await freePort();
    const configFile = join(store.dataDir, 'keyward.yaml');
    writeFileSync(
      configFile,
      [
        `https: { listen: "127.0.0.1:${httpsPort}", hostnames: [localhost] }`,
        `http: { listen: "127.0.0.1:${httpPort}" }`,
        // validation.retryFor at its default: a failure must reach the clients before they give up.
        `validation: { httpPort: ${challengePort}, dnsResolver: "${dns.address}", timeout: 5s }`,
        'log: { level: warn }',
      ].join('\n'),
    );
    env = { ...store.env, KEYWARD_CONFIG: configFile };
    serve = await keywardServe([], env);
    directory = `https://localhost:${httpsPort}/acme/directory`;
    httpBase = `http://127.0.0.1:${httpPort}`;
    rootPem = await (await fetch(`${httpBase}/roots.pem`)).text();
    rootFile = join(work, 'root.pem');
    writeFileSync(rootFile, rootPem);
    const hook = join(work, 'txt-hook.sh');
    writeFileSync(
      hook,
      `#!/bin/sh
# certbot: CERTBOT_DOMAIN/CERTBOT_VALIDATION; lego exec: $1=present|cleanup $2=fqdn $3=value
if [ -n "$CERTBOT_DOMAIN" ]; then action=\${1:-present}; name="_acme-challenge.$CERTBOT_DOMAIN"; value="$CERTBOT_VALIDATION"
else action="$1"; name="$2"; value="$3"; fi
exec curl -fsS "http://127.0.0.1:${controlPort}/$action?name=$name&value=$value" >/dev/null
`,
    );
    chmodSync(hook, 0o755);
  });

  afterAll(async () => {
    await serve?.stop();
    control?.close();
    await dns?.close();
    await store?.cleanup();
  });

  /** A web server on the http-01 port answering every challenge wrongly, while `run` runs. */
  async function wrongAnswers<T>(run: () => Promise<T>): Promise<T> {
    const wrong = createServer((_req, res) => res.end('not-the-key-authorization'));
    await new Promise<void>((resolve) => wrong.listen(challengePort, '127.0.0.1', () => resolve()));
    try {
      return await run();
    } finally {
      await new Promise<void>((resolve) => wrong.close(() => resolve()));
    }
  }
  const serverDetail = /Expected \\?"[\w-]+\.[\w-]+\\?" \(got \\?"not-the-key-authorization\\?"\)/;

  async function certStatus(serial: string): Promise<string> {
    const r = await keyward(['certs', 'show', serial, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout).status;
  }

  /** `keyward ca rotate-intermediate` of the intermediate that signed this leaf, as an operator runs it. */
  async function rotateIssuerOf(chain: string): Promise<{ old: string; new: string }> {
    const old = issuerIdOf(chain);
    const r = await keyward(['ca', 'rotate-intermediate', old, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { old: { state: string }; new: { id: string } };
    expect(out.old.state).toBe('retiring');
    return { old, new: out.new.id };
  }

  /** OCSP (openssl ocsp) and the CRL (openssl verify -crl_check) both answer for this leaf. */
  async function expectRevocationAnswers(chain: string, tag: string): Promise<void> {
    const [leaf, inter] = blocks(chain);
    const text = opensslText(leaf!);
    const file = (name: string, data: string | Uint8Array) => {
      const path = join(work, `${tag}-${name}`);
      writeFileSync(path, data);
      return path;
    };
    const files = {
      root: file('root.pem', rootPem),
      inter: file('inter.pem', `${inter}\n`),
      leaf: file('leaf.pem', `${leaf}\n`),
    };
    const ocspUrl = /OCSP - URI:(\S+)/.exec(text)![1]!;
    const ocsp = await client(
      'openssl',
      [
        'ocsp',
        '-issuer',
        files.inter,
        '-cert',
        files.leaf,
        '-url',
        ocspUrl,
        '-CAfile',
        files.root,
        '-verify_other',
        files.inter,
      ],
      {},
    );
    expect(ocsp.code, ocsp.output).toBe(0);
    expect(ocsp.output).toContain('Response verify OK');
    expect(ocsp.output).toContain(`${files.leaf}: good`);
    const crlUrl = /CRL Distribution Points:\s*Full Name:\s*URI:(\S+)/.exec(text)![1]!;
    const crl = await fetch(crlUrl);
    expect(crl.status, crlUrl).toBe(200);
    const crlDer = file('crl.der', new Uint8Array(await crl.arrayBuffer()));
    const crlPem = join(work, `${tag}-crl.pem`);
    const conv = await client('openssl', ['crl', '-inform', 'DER', '-in', crlDer, '-out', crlPem], {});
    expect(conv.code, conv.output).toBe(0);
    const checked = await client(
      'openssl',
      ['verify', '-crl_check', '-CRLfile', crlPem, '-CAfile', files.root, '-untrusted', files.inter, files.leaf],
      {},
    );
    expect(checked.code, checked.output).toBe(0);
  }

  /**
   * After a renewal across `ca rotate-intermediate`: the renewed certificate comes from the new
   * intermediate, which the chain the client saved carries; the old one still verifies; OCSP and
   * the CRL answer for both (the old intermediate is retiring, not gone).
   */
  async function expectRenewedAcross(rotated: { old: string; new: string }, before: string, after: string) {
    expect(issuerIdOf(before)).toBe(rotated.old);
    expect(issuerIdOf(after)).toBe(rotated.new);
    const newInter = Buffer.from(await (await fetch(`${httpBase}/issuers/${rotated.new}.cer`)).arrayBuffer());
    expect(derHex(blocks(after)[1]!)).toBe(newInter.toString('hex'));
    expect(opensslVerify(rootPem, after)).toMatchObject({ ok: true });
    expect(opensslVerify(rootPem, before)).toMatchObject({ ok: true });
    await expectRevocationAnswers(before, `${rotated.old}-old`);
    await expectRevocationAnswers(after, `${rotated.new}-new`);
  }

  describe('certbot', () => {
    const dirs = () => [
      '--config-dir',
      join(work, 'certbot', 'config'),
      '--work-dir',
      join(work, 'certbot', 'work'),
      '--logs-dir',
      join(work, 'certbot', 'logs'),
    ];
    const certbotEnv = () => ({ REQUESTS_CA_BUNDLE: rootFile });
    const live = (name: string) => readFileSync(join(work, 'certbot', 'config', 'live', name, 'fullchain.pem'), 'utf8');
    /** A certificate over http-01 with certbot's own listener. */
    const certonlyStandalone = (domain: string, certName: string) =>
      client(
        'certbot',
        [
          ...['certonly', '--non-interactive', '--agree-tos', '--register-unsafely-without-email'],
          ...['--server', directory, ...dirs()],
          ...['--standalone', '--http-01-port', String(challengePort), '--http-01-address', '127.0.0.1'],
          ...['-d', domain, '--cert-name', certName],
        ],
        certbotEnv(),
      );

    /** `certbot renew --force-renewal` of one lineage; `extra` adds flags (without, its saved renewal configuration decides). */
    const forceRenew = (certName: string, ...extra: string[]) =>
      client(
        'certbot',
        [
          ...['renew', '--non-interactive', '--no-random-sleep-on-renew', '--force-renewal'],
          ...['--cert-name', certName, ...extra, ...dirs()],
        ],
        certbotEnv(),
      );

    it('registers and issues over http-01, and the chain verifies against /roots.pem', async () => {
      const r = await certonlyStandalone('certbot-http.test', 'http');
      expect(r.code, r.output).toBe(0);
      const chain = live('http');
      expect(opensslVerify(rootPem, chain)).toMatchObject({ ok: true });
      expect(opensslText(chain)).toContain('DNS:certbot-http.test');
    });

    it('issues over dns-01 with a manual hook', async () => {
      const r = await client(
        'certbot',
        [
          'certonly',
          '--non-interactive',
          '--agree-tos',
          '--register-unsafely-without-email',
          '--server',
          directory,
          ...dirs(),
          '--manual',
          '--preferred-challenges',
          'dns',
          '--manual-auth-hook',
          join(work, 'txt-hook.sh'),
          '--must-staple',
          '-d',
          'certbot-dns.test',
          '--cert-name',
          'dns',
        ],
        certbotEnv(),
      );
      expect(r.code, r.output).toBe(0);
      expect(opensslVerify(rootPem, live('dns'))).toMatchObject({ ok: true });
      // --must-staple is honoured (tls-server allows it), not dropped.
      expect(opensslText(live('dns'))).toMatch(/TLS Feature:\s*status_request/);
    });

    it("reports the server's problem for a wrong http-01 answer instead of timing out", async () => {
      const r = await wrongAnswers(() =>
        client(
          'certbot',
          [
            'certonly',
            '--non-interactive',
            '--agree-tos',
            '--register-unsafely-without-email',
            '--server',
            directory,
            ...dirs(),
            '--manual',
            '--preferred-challenges',
            'http',
            '--manual-auth-hook',
            '/bin/true',
            '-d',
            'certbot-wrong.test',
            '--cert-name',
            'wrong',
          ],
          certbotEnv(),
        ),
      );
      expect(r.code).not.toBe(0);
      expect(r.output).toContain('incorrectResponse');
      expect(r.output).toMatch(serverDetail);
      expect(r.output).not.toContain('All authorizations were not finalized');
    });

    it('renews, then revokes, and the revocation is recorded', async () => {
      const before = serialOf(live('http'));
      const renew = await forceRenew('http', '--server', directory);
      expect(renew.code, renew.output).toBe(0);
      const after = serialOf(live('http'));
      expect(after).not.toBe(before);
      expect(opensslVerify(rootPem, live('http'))).toMatchObject({ ok: true });

      const revoke = await client(
        'certbot',
        [
          'revoke',
          '--non-interactive',
          '--cert-name',
          'http',
          '--reason',
          'superseded',
          '--no-delete-after-revoke',
          '--server',
          directory,
          ...dirs(),
        ],
        certbotEnv(),
      );
      expect(revoke.code, revoke.output).toBe(0);
      expect(await certStatus(after)).toBe('revoked');
      expect(await certStatus(before)).toBe('valid');
    });

    it('renews across `ca rotate-intermediate` with no change on its side', async () => {
      const issued = await certonlyStandalone('certbot-rotate.test', 'rotate');
      expect(issued.code, issued.output).toBe(0);
      const before = live('rotate');
      const rotated = await rotateIssuerOf(before);
      const renew = await forceRenew('rotate');
      expect(renew.code, renew.output).toBe(0);
      await expectRenewedAcross(rotated, before, live('rotate'));
    });
  });

  // golang.org/x/crypto/acme is what cert-manager is built on; it polls an authorization until it
  // is no longer pending, so the failure must turn it invalid soon (validation.retryFor).
  describe('golang.org/x/crypto/acme', () => {
    it("reports the server's problem for a wrong http-01 answer within 20 s", async () => {
      const binary = join(work, 'acme-flow');
      await run('go', ['build', '-o', binary, join(process.cwd(), 'test', 'interop', 'go-acme', 'main.go')], {
        env: {
          ...process.env,
          GO111MODULE: 'off',
          GOPATH: `${join(work, 'gopath')}:/usr/share/gocode`,
          GOCACHE: join(work, 'gocache'),
          GOFLAGS: '',
        },
      });
      const started = Date.now();
      const r = await wrongAnswers(() =>
        client(
          binary,
          [
            ...['-directory', directory, '-ca-bundle', Buffer.from(rootPem).toString('base64')],
            ...['-domain', 'go-wrong.test', '-http01-listen', '', '-out', join(work, 'go-chain.pem')],
          ],
          {},
        ),
      );
      const seconds = (Date.now() - started) / 1000;
      expect(r.code, r.output).not.toBe(0);
      expect(r.output).toContain('authorization error for go-wrong.test');
      expect(r.output).toContain('urn:ietf:params:acme:error:incorrectResponse');
      expect(r.output).toMatch(serverDetail);
      expect(seconds).toBeLessThan(20);
    });
  });

  describe('lego', () => {
    const base = (domain: string) => [
      '--server',
      directory,
      '--accept-tos',
      '--email',
      'ops@example.com',
      '--path',
      join(work, 'lego'),
      '--domains',
      domain,
    ];
    const legoEnv = () => ({
      LEGO_CA_CERTIFICATES: rootFile,
      EXEC_PATH: join(work, 'txt-hook.sh'),
      EXEC_PROPAGATION_TIMEOUT: '30',
      EXEC_POLLING_INTERVAL: '1',
    });
    const crt = (domain: string) => readFileSync(join(work, 'lego', 'certificates', `${domain}.crt`), 'utf8');
    mkdirSync(join(work, 'lego'), { recursive: true });

    it('registers and issues over http-01, and the chain verifies against /roots.pem', async () => {
      const r = await client(
        'lego',
        [...base('lego-http.test'), '--http', '--http.port', `127.0.0.1:${challengePort}`, 'run'],
        legoEnv(),
      );
      expect(r.code, r.output).toBe(0);
      expect(opensslVerify(rootPem, crt('lego-http.test'))).toMatchObject({ ok: true });
    });

    it("reports the server's problem for a wrong http-01 answer instead of timing out", async () => {
      const webroot = join(work, 'lego-webroot');
      mkdirSync(webroot, { recursive: true });
      const r = await wrongAnswers(() =>
        client('lego', [...base('lego-wrong.test'), '--http', '--http.webroot', webroot, 'run'], legoEnv()),
      );
      expect(r.code).not.toBe(0);
      expect(r.output).toContain('urn:ietf:params:acme:error:incorrectResponse');
      expect(r.output).toMatch(serverDetail);
    });

    it('issues over dns-01 with the exec provider', async () => {
      const r = await client(
        'lego',
        [...base('lego-dns.test'), '--dns', 'exec', '--dns.resolvers', dns.address, '--dns.disable-cp', 'run'],
        legoEnv(),
      );
      expect(r.code, r.output).toBe(0);
      expect(opensslVerify(rootPem, crt('lego-dns.test'))).toMatchObject({ ok: true });
    });

    it('renews, then revokes, and the revocation is recorded', async () => {
      const before = serialOf(crt('lego-http.test'));
      const renew = await client(
        'lego',
        [
          ...base('lego-http.test'),
          '--http',
          '--http.port',
          `127.0.0.1:${challengePort}`,
          'renew',
          '--days',
          '100000',
          '--no-random-sleep',
        ],
        legoEnv(),
      );
      expect(renew.code, renew.output).toBe(0);
      const after = serialOf(crt('lego-http.test'));
      expect(after).not.toBe(before);
      const revoke = await client('lego', [...base('lego-http.test'), 'revoke', '--reason', '4'], legoEnv());
      expect(revoke.code, revoke.output).toBe(0);
      expect(await certStatus(after)).toBe('revoked');
    });

    it('renews across `ca rotate-intermediate` with no change on its side', async () => {
      const http = ['--http', '--http.port', `127.0.0.1:${challengePort}`];
      const issued = await client('lego', [...base('lego-rotate.test'), ...http, 'run'], legoEnv());
      expect(issued.code, issued.output).toBe(0);
      const before = crt('lego-rotate.test');
      const rotated = await rotateIssuerOf(before);
      const renew = await client(
        'lego',
        [...base('lego-rotate.test'), ...http, 'renew', '--days', '100000', '--no-random-sleep'],
        legoEnv(),
      );
      expect(renew.code, renew.output).toBe(0);
      await expectRenewedAcross(rotated, before, crt('lego-rotate.test'));
    });
  });
});
