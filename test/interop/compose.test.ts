import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';

import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';

import { keywardServe } from '../support/cli.ts';
import { createDatabase, dropDatabase } from '../support/db.ts';
import { startTestDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { opensslText, opensslVerify, tempDir } from '../support/openssl.ts';

// docker-compose.yml, started as plain processes (no Docker engine here): the same services, the
// same environment, the same configuration file and the same host names and ports. What a
// container would have, the test maps onto this machine, and nothing else changes:
// - each service gets a loopback address of its own (its "container"), which is where its
//   compose host name points;
// - /run/secrets/* and /var/lib/keyward become files and directories in a temporary directory;
// - PostgreSQL is the server the suite uses, in a database of the test's own;
// - Docker's embedded DNS becomes the test DNS server (validation.dnsResolver), since the CA
//   resolves the names it validates itself.
const HOSTS: Record<string, string> = {
  'keyward-1': '127.0.0.2',
  'keyward-2': '127.0.0.3',
  keyward: '127.0.0.4', // the proxy's network alias
};
const CLIENT_HOST = '127.0.0.5'; // where the ACME client answers http-01, on port 80 as in production
const NAME = 'app.compose.test';

interface ComposeService {
  environment?: Record<string, string>;
  volumes?: string[];
  secrets?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  networks?: { default?: { aliases?: string[] } };
  image?: string;
}

describe('docker-compose.yml as processes: PostgreSQL, two replicas behind one proxy port', () => {
  const work = tempDir('kw-compose-');
  const compose = parse(readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
    secrets: Record<string, { file: string }>;
  };
  const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbName = `kw_compose_${randomBytes(4).toString('hex')}`;
  const replicas: Awaited<ReturnType<typeof keywardServe>>[] = [];
  let proxy: ChildProcess | undefined;
  let dns: TestDnsServer;
  let http01: Server;
  const tokens = new Map<string, string>();
  let rootPem: string;

  /** The host path of a container path, through the service's volumes and secrets. */
  const secretFile = (name: string) => join(work, 'secrets', name);

  beforeAll(async () => {
    const services = compose.services;
    expect(Object.keys(services).sort()).toEqual(['keyward-1', 'keyward-2', 'postgres', 'proxy']);
    expect(services.proxy!.ports).toEqual(['8443:8443']);
    expect(services.proxy!.networks?.default?.aliases).toEqual(['keyward']);
    expect(services['keyward-2']!.depends_on?.['keyward-1']).toEqual({ condition: 'service_healthy' });

    dns = await startTestDnsServer();
    dns.setA(NAME, CLIENT_HOST);
    http01 = createServer((req, res) => {
      const token = /^\/\.well-known\/acme-challenge\/([\w-]+)$/.exec(req.url ?? '')?.[1];
      const answer = token && tokens.get(token);
      res.writeHead(answer ? 200 : 404).end(answer ?? '');
    });
    await new Promise<void>((resolve) => http01.listen(80, CLIENT_HOST, resolve));

    // Secrets, made as the comment in docker-compose.yml says (the URL names this test's database).
    const url = new URL(await createDatabase(base, dbName));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(work, 'secrets'), { mode: 0o700 });
    writeFileSync(secretFile('database-url'), `${url.toString()}\n`, { mode: 0o600 });
    writeFileSync(secretFile('root-key'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });

    for (const name of ['keyward-1', 'keyward-2']) {
      const service = services[name]!;
      expect(service.secrets).toEqual(['database-url', 'root-key']);
      const [source, target] = service.volumes!.find((v) => v.endsWith(':ro'))!.split(':');
      expect(target).toBe(service.environment!.KEYWARD_CONFIG);
      const config = parse(readFileSync(source!, 'utf8')) as Record<string, Record<string, unknown> & object>;
      const dataDir = join(work, name);
      mkdirSync(dataDir, { mode: 0o700 });
      const host = HOSTS[name]!;
      const local = {
        ...config,
        dataDir,
        database: { urlFile: secretFile('database-url') },
        rootOfTrust: { ...config.rootOfTrust, path: secretFile('root-key') },
        https: { ...config.https, listen: String(config.https!.listen).replace('0.0.0.0', host) },
        http: { ...config.http, listen: String(config.http!.listen).replace('0.0.0.0', host) },
        profilesDir: join(process.cwd(), 'ca-config', 'profiles'),
        validation: { ...config.validation, dnsResolver: dns.address },
        log: { level: 'warn' },
      };
      const file = join(work, `${name}.yaml`);
      writeFileSync(file, stringify(local));
      // keyward-2 starts once keyward-1 answers (depends_on: service_healthy).
      replicas.push(await keywardServe([], { ...service.environment, KEYWARD_CONFIG: file }));
    }

    // The proxy: Debian's haproxy with the compose file's haproxy.cfg, names mapped to addresses.
    const proxyVolume = services.proxy!.volumes![0]!.split(':')[0]!;
    let cfg = readFileSync(proxyVolume, 'utf8').replace(/^(\s*bind )(:8443)/m, `$1${HOSTS.keyward}$2`);
    for (const [name, ip] of Object.entries(HOSTS)) cfg = cfg.replaceAll(` ${name}:`, ` ${ip}:`);
    cfg = cfg.replace(/^\s*log stdout.*$/m, '');
    writeFileSync(join(work, 'haproxy.cfg'), cfg);
    proxy = spawn('haproxy', ['-db', '-f', join(work, 'haproxy.cfg')], { stdio: ['ignore', 'inherit', 'inherit'] });
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://${HOSTS.keyward}:8443/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (i > 100 || proxy.exitCode !== null) throw new Error(`haproxy did not come up (exit ${proxy.exitCode})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    rootPem = await (await fetch(`http://${HOSTS.keyward}:8443/roots.pem`)).text();

    // The client resolves compose names as a container on that network would.
    const lookup: LookupFunction = (hostname, options, callback) => {
      const ip = HOSTS[hostname] ?? hostname;
      if ((options as { all?: boolean }).all)
        (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: ip, family: 4 }]);
      else callback(null, ip, 4);
    };
    acme.axios.defaults.httpsAgent = new https.Agent({ ca: rootPem, lookup, keepAlive: false });
  }, 180_000);

  afterAll(async () => {
    proxy?.kill('SIGTERM');
    await Promise.all(replicas.map((r) => r.stop()));
    http01?.close();
    await dns?.close();
    await dropDatabase(base, dbName).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it('both replicas share one CA, and an ACME client gets a certificate through https://keyward:8443', async () => {
    expect(replicas[0]!.banner).toContain('Keyward is running (new CA created).');
    expect(replicas[1]!.banner).not.toContain('new CA created');
    expect(replicas[1]!.banner).toContain('ACME directory   https://keyward:8443/acme/directory');

    if (process.env.KW_DEBUG) acme.setLogger((m) => process.stderr.write(`acme: ${m}\n`));
    const client = new acme.Client({
      directoryUrl: 'https://keyward:8443/acme/directory',
      accountKey: await acme.crypto.createPrivateEcdsaKey(),
    });
    const [key, csr] = await acme.crypto.createCsr({ altNames: [NAME] });
    const certPem = await client.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // Its own pre-check would resolve the name through the system resolver, not the CA's.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) =>
        void tokens.set(challenge.token, keyAuthorization),
      challengeRemoveFn: async (_authz, challenge) => void tokens.delete(challenge.token),
    });
    expect(key.length).toBeGreaterThan(0);
    expect(opensslVerify(rootPem, certPem)).toMatchObject({ ok: true });
    const text = opensslText(certPem);
    expect(text).toContain(`DNS:${NAME}`);
    // Revocation URLs name the proxy, and plain HTTP through the same port answers them.
    const crl = /URI:(http:\/\/keyward:8443\/crl\/[^\s]+)/.exec(text)?.[1];
    expect(crl).toBeDefined();
    const res = await fetch(crl!.replace('keyward', HOSTS.keyward!));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('pkix-crl');
  });

  it('the proxy spreads connections over both replicas', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const serial = await new Promise<string>((resolve, reject) => {
        const req = https.get(
          { host: HOSTS.keyward, port: 8443, path: '/health', servername: 'keyward', ca: rootPem, agent: false },
          (res) => {
            res.resume();
            resolve((res.socket as TLSSocket).getPeerCertificate().serialNumber);
          },
        );
        req.on('error', reject);
      });
      seen.add(serial);
    }
    // Each replica serves its own HTTPS certificate for `keyward`, so two serials means two replicas.
    expect(seen.size).toBe(2);
  });
});
