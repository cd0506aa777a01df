import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { preflight } from '../../src/cli/serve.ts';
import { loadConfig } from '../../src/config/load.ts';
import { adminSocketPath, callAdmin } from '../../src/http/admin-client.ts';
import type { KeyDetail, KeySummary } from '../../src/kms/inventory.ts';
import { kmsCli } from '../kms/helpers.ts';
import { freePort, startTestCa, type TestCa } from '../support/ca.ts';

function configIn(dir: string, yaml: string) {
  const file = join(dir, 'keyward.yaml');
  writeFileSync(file, yaml);
  return loadConfig({ configFile: file, env: {}, cwd: dir });
}

describe('serve checks its settings before it creates anything', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kw-preflight-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a wildcard listen address without a publicUrl, naming the setting', () => {
    expect(() => configIn(dir, 'http:\n  listen: 0.0.0.0:8080\n')).toThrow(
      /http\.publicUrl: required when http\.listen is a wildcard address \(0\.0\.0\.0:8080\): certificates would carry http:\/\/0\.0\.0\.0:8080 URLs/,
    );
    expect(() => configIn(dir, 'http:\n  listen: "[::]:8080"\n')).toThrow(/http\.publicUrl: required/);
    const ok = configIn(dir, 'http:\n  listen: 0.0.0.0:8080\n  publicUrl: http://keyward:8080\n');
    expect(ok.httpBaseUrl).toBe('http://keyward:8080');
  });

  it('reads the database URL from database.urlFile (a secret), and names the setting when it cannot', () => {
    writeFileSync(join(dir, 'db-url'), 'postgres://keyward:s3cret@db.internal:5432/keyward\n');
    expect(configIn(dir, 'database:\n  urlFile: db-url\n').databaseUrl).toBe(
      'postgres://keyward:s3cret@db.internal:5432/keyward',
    );
    expect(() => configIn(dir, 'database:\n  urlFile: missing\n')).toThrow(
      `database.urlFile: cannot read ${join(dir, 'missing')}: ENOENT`,
    );
    writeFileSync(join(dir, 'not-url'), 'hunter2 is not a URL\n');
    expect(() => configIn(dir, 'database:\n  urlFile: not-url\n')).toThrow(
      /^database\.urlFile: .* does not hold a URL$/,
    );
  });

  it('a port in use or a hostname no certificate can carry stops it before the data directory exists', async () => {
    const busy: Server = createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => busy.listen(port, '127.0.0.1', resolve));
    try {
      const dataDir = join(dir, 'data');
      const config = configIn(
        dir,
        `dataDir: ${dataDir}\nhttps:\n  listen: 127.0.0.1:${port}\nhttp:\n  listen: 127.0.0.1:${await freePort()}\n`,
      );
      await expect(preflight(config)).rejects.toThrow(`https.listen 127.0.0.1:${port}: the port is in use`);
      const badName = configIn(
        dir,
        `dataDir: ${dataDir}\nhttps:\n  listen: 127.0.0.1:${await freePort()}\n  hostnames: [keyward, bad_name]\n`,
      );
      await expect(preflight(badName)).rejects.toThrow(
        'https.hostnames: "bad_name" is neither a DNS name nor an IP address',
      );
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });
});

describe('a running server', () => {
  let ca: TestCa;
  beforeAll(async () => {
    // `keyward`: the single-label name docker-compose and Kubernetes give a service.
    ca = await startTestCa({
      settings: { https: { listen: `127.0.0.1:${await freePort()}`, hostnames: ['keyward', '127.0.0.1'] } },
    });
  });
  afterAll(async () => ca?.close());

  it('serves HTTPS with a certificate for a single-label hostname', async () => {
    const port = Number(ca.config.https.listen.split(':')[1]);
    const peer = await new Promise<{ authorized: boolean; san: string | undefined }>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'keyward', ca: ca.rootPem }, () => {
        resolve({ authorized: socket.authorized, san: socket.getPeerCertificate().subjectaltname });
        socket.end();
      });
      socket.on('error', reject);
    });
    expect(peer).toEqual({ authorized: true, san: 'DNS:keyward, IP Address:127.0.0.1' });
    expect(ca.httpsUrl).toBe(`https://keyward:${port}`);
  });

  it('refuses a command given another configuration file, naming both; accepts its own by any path', async () => {
    const socket = adminSocketPath(ca.config.dataDir);
    const other = join(ca.store.dataDir, 'other.yaml');
    writeFileSync(other, 'log:\n  level: warn\n');
    await expect(callAdmin(socket, 'ca.issuers', {}, other)).rejects.toThrow(
      `this command was given the configuration ${other}, but the server on this data directory runs with ${ca.configFile}`,
    );
    const alias = join(ca.store.dataDir, 'alias.yaml');
    symlinkSync(ca.configFile, alias);
    expect(((await callAdmin(socket, 'ca.issuers', { principal: 'test' }, alias))!.result as unknown[]).length).toBe(2);
    expect(((await callAdmin(socket, 'ca.issuers', { principal: 'test' }))!.result as unknown[]).length).toBe(2);
  });

  it('kms show accepts the names and the short ids that kms list prints', async () => {
    const list = await kmsCli<KeySummary[]>(ca.ctx, ['kms', 'list']);
    const intermediate = list.find((k) => k.kind === 'key' && k.name === 'intermediate')!;
    const root = list.find((k) => k.kind === 'root-of-trust')!;
    expect((await kmsCli<KeyDetail>(ca.ctx, ['kms', 'show'], {}, ['intermediate'])).id).toBe(intermediate.id);
    expect((await kmsCli<KeyDetail>(ca.ctx, ['kms', 'show'], {}, [intermediate.id.slice(0, 8)])).id).toBe(
      intermediate.id,
    );
    expect((await kmsCli<KeyDetail>(ca.ctx, ['kms', 'show'], {}, [root.name])).id).toBe(root.id);
    // The root's short id, as printed on each KEK version line.
    const shortRoot = list.find((k) => k.kind === 'kek')!.versions![0]!.rootId.slice(0, 8);
    expect((await kmsCli<KeyDetail>(ca.ctx, ['kms', 'show'], {}, [shortRoot])).id).toBe(root.id);
    await expect(kmsCli(ca.ctx, ['kms', 'show'], {}, ['00000000'])).rejects.toThrow(
      'no key, KEK or root named "00000000"',
    );
  });
});
