import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { ClusterIssuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/ClusterIssuer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

import { createTestStore, type TestStore } from '../support/db.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { opensslVerify, tempDir } from '../support/openssl.ts';
import { guideBlocks, guideScript, runScript } from './guide-runner.ts';

// Every guide in docs/clients/, followed as written: the README's Keyward (keyward serve on the
// default ports, validation.httpPort 5002, validation.dnsResolver 127.0.0.1:5300), then each
// guide's commands in one shell, in one working directory, with `keyward` on the PATH.
const run = promisify(execFile);
const GUIDES = join(process.cwd(), 'docs', 'clients');
const DNS_PORT = 5300;
const DNS_API_PORT = 5380;

describe('client guides, followed as written', () => {
  const work = tempDir('kw-guides-');
  // Servers the guides start drop privileges (nginx's workers run as nobody) and read files here.
  chmodSync(work, 0o755);
  let store: TestStore;
  let dns: TestDnsServer;
  let api: Server;
  let keyward: ReturnType<typeof runScript> | undefined;
  let env: Record<string, string>;

  /** The suite's DNS server on the port the guides document: *.internal → 127.0.0.1, TXT by API. */
  const startDns = async () => {
    dns = await startTestDnsServer(DNS_PORT);
    const names = new Set<string>(['cm.internal']); // cm.internal: the cert-manager flow below
    for (const f of readdirSync(GUIDES))
      for (const m of readFileSync(join(GUIDES, f), 'utf8').matchAll(/(?:\*\.)?((?:[a-z0-9-]+\.)+internal)\b/g))
        names.add(m[1]!);
    for (const n of names) dns.setA(n, '127.0.0.1');
  };

  beforeAll(async () => {
    store = await createTestStore();
    // The "DNS provider API" the hooks call.
    api = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const name = (url.searchParams.get('name') ?? '').replace(/\.$/, '');
      const value = url.searchParams.get('value');
      if (url.pathname === '/present' && value) dns.setTxt(name, [...(txt.get(name) ?? []), value]);
      else if (url.pathname === '/cleanup') dns.clear(name);
      if (url.pathname === '/present' && value) txt.set(name, [...(txt.get(name) ?? []), value]);
      if (url.pathname === '/cleanup') txt.delete(name);
      res.end('ok');
    });
    const txt = new Map<string, string[]>();
    await new Promise<void>((resolve) => api.listen(DNS_API_PORT, '127.0.0.1', resolve));

    const bin = join(work, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'keyward'), `#!/bin/sh\nexec node ${join(process.cwd(), 'bin', 'keyward.mjs')} "$@"\n`);
    chmodSync(join(bin, 'keyward'), 0o755);
    env = {
      PATH: `${bin}:${process.env.PATH}`,
      HOME: work,
      LANG: 'C.UTF-8',
      ...store.env,
    };
    keyward = runScript(guideScript(guideBlocks(join(GUIDES, 'README.md')), true), {
      cwd: work,
      env,
      timeoutMs: 1_500_000,
    });
    for (let i = 0; !existsSync(join(work, '.ready')); i++) {
      if (i > 600)
        throw new Error(
          `the README's Keyward did not come up:\n${readFileSync(join(work, 'background-1.log'), 'utf8')}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 120_000);

  afterAll(async () => {
    keyward?.kill();
    await keyward;
    api?.close();
    await dns?.close();
    await store?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  const follow = async (guide: string, privateDirs?: Record<string, string>) => {
    const blocks = guideBlocks(join(GUIDES, guide));
    for (const b of blocks.filter((x) => x.mode === 'not-run'))
      expect(b.arg, `${guide}: a block not run must say why`).toBeTruthy();
    const r = await runScript(guideScript(blocks), { cwd: work, env, timeoutMs: 240_000, privateDirs });
    expect(r.code, `${guide}:\n${r.output}`).toBe(0);
    return r.output;
  };

  it('the README: Keyward serves and the root it prints is the one the guides trust', () => {
    expect(readFileSync(join(work, 'keyward-root.pem'), 'utf8')).toContain('BEGIN CERTIFICATE');
    expect(readFileSync(join(work, 'background-1.log'), 'utf8')).toContain(
      'ACME directory   https://localhost:8443/acme/directory',
    );
  });

  // First, before the suite's own DNS server takes port 5300: the README's dnsmasq serves it.
  it("the top-level README's ACME quick start: dnsmasq and certbot, with the shipped settings", async () => {
    const shipped = parse(readFileSync('ca-config/keyward.yaml', 'utf8')) as { validation: unknown };
    expect(shipped.validation).toEqual({ httpPort: 5002, dnsResolver: `127.0.0.1:${DNS_PORT}` });
    const blocks = guideBlocks(join(process.cwd(), 'README.md'), '## ACME quick start');
    expect(blocks.map((b) => b.mode)).toEqual(['background', 'run']);
    // dnsmasq needs a moment before certbot's first order asks Keyward to resolve the name.
    const script = guideScript(blocks).replace("echo '+ block 1' >&2", "sleep 1; echo '+ block 1' >&2");
    let r;
    try {
      r = await runScript(script, { cwd: work, env, timeoutMs: 180_000 });
    } finally {
      await startDns();
    }
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('letsencrypt/live/app.internal/cert.pem: OK');
  });

  it('certbot: standalone on a chosen port, renew and revoke; webroot behind nginx; dns-01 with a hook', async () => {
    const letsencrypt = join(work, 'letsencrypt');
    for (const d of ['etc', 'lib', 'log']) mkdirSync(join(letsencrypt, d), { recursive: true });
    const output = await follow('certbot.md', {
      '/etc/letsencrypt': join(letsencrypt, 'etc'),
      '/var/lib/letsencrypt': join(letsencrypt, 'lib'),
      '/var/log/letsencrypt': join(letsencrypt, 'log'),
    });
    expect(output).toContain('hello from nginx');
    const wildcard = readFileSync(join(letsencrypt, 'etc', 'live', 'db.internal', 'fullchain.pem'), 'utf8');
    expect(opensslVerify(readFileSync(join(work, 'keyward-root.pem'), 'utf8'), wildcard)).toMatchObject({ ok: true });
  });

  it('lego: http-01 on a chosen port, renew, revoke, dns-01 through exec', async () => {
    await follow('lego.md');
    expect(existsSync(join(work, '.lego', 'certificates', '_.api.internal.crt'))).toBe(true);
  });

  it('cert-manager: the ClusterIssuer is valid, and x/crypto/acme runs its flow with that EAB and caBundle', async () => {
    await follow('cert-manager.md');
    const issuer = parse(readFileSync(join(work, 'cluster-issuer.rendered.yaml'), 'utf8'));
    new ClusterIssuer(issuer).validate();
    const { server, caBundle, externalAccountBinding } = issuer.spec.acme;
    const hmac = JSON.parse(readFileSync(join(work, 'eab.json'), 'utf8')).hmacKey as string;
    const gopath = join(work, 'gopath');
    mkdirSync(gopath, { recursive: true });
    execFileSync(
      'go',
      ['build', '-o', join(work, 'acme-flow'), join(process.cwd(), 'test', 'interop', 'go-acme', 'main.go')],
      {
        env: {
          ...process.env,
          GO111MODULE: 'off',
          GOPATH: `${gopath}:/usr/share/gocode`,
          GOCACHE: join(work, 'gocache'),
          GOFLAGS: '',
        },
        stdio: 'pipe',
      },
    );
    // Not execFileSync: the DNS server Keyward asks lives in this process and must keep answering.
    await run(
      join(work, 'acme-flow'),
      [
        ...['-directory', server, '-ca-bundle', caBundle, '-eab-kid', externalAccountBinding.keyID, '-eab-hmac', hmac],
        ...['-domain', 'cm.internal', '-http01-listen', '127.0.0.1:5002', '-out', join(work, 'cm-chain.pem')],
      ],
      { timeout: 150_000 },
    );
    const chain = readFileSync(join(work, 'cm-chain.pem'), 'utf8');
    expect(opensslVerify(readFileSync(join(work, 'keyward-root.pem'), 'utf8'), chain)).toMatchObject({ ok: true });
  });

  it('Caddy: gets its certificate from Keyward and serves it', async () => {
    expect(await follow('caddy.md')).toContain('hello from caddy');
  });

  it('Traefik: the resolver settings parse (Traefik itself is not in Debian)', async () => {
    expect(await follow('traefik.md')).toContain('traefik.yml ok');
  });

  it('mesh: keyward agent bootstraps by fingerprint and writes a chain that verifies', async () => {
    const output = await follow('mesh.md');
    expect(output).toMatch(/new certificate [0-9a-f]+/);
    expect(output).toContain('certs/cert.pem: OK');
  });
});
