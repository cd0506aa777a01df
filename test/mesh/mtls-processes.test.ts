import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { keywardArgs, spawnChild, tsxArgs } from './helpers.ts';

const SERVER_ID = 'spiffe://prod.example/ns/pay/sa/server';
const CLIENT_ID = 'spiffe://prod.example/ns/web/sa/client';
const PEER = join(process.cwd(), 'test', 'mesh', 'fixtures', 'peer.ts');

// Five processes: this one (the CA), two `keyward agent`s, and two services that talk mTLS with
// the agents' files. Certificates live 6 s, so each is renewed (at 4 s) while traffic flows.
describe('mesh: two services talk mTLS with agent-managed certificates across renewals', () => {
  let ca: TestCa;
  let dir: string;
  const children: Array<ReturnType<typeof spawnChild>> = [];

  beforeAll(async () => {
    ca = await startTestCa({
      settings: {
        profiles: {
          'mesh-test': {
            extKeyUsages: ['serverAuth', 'clientAuth'],
            defaultLifetime: '6s',
            maxLifetime: '1m',
            sanTypes: ['dns', 'ip', 'uri'],
          },
        },
      },
    });
    dir = mkdtempSync(join(tmpdir(), 'kw-mesh-'));
    writeFileSync(join(dir, 'roots.pem'), ca.rootPem);
  });
  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGTERM');
    await Promise.all(children.map((c) => c.exited));
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('agents obtain and renew; every connection succeeds and both sides see renewed peers', async () => {
    const deps = { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance };
    const tokens = await Promise.all(
      [SERVER_ID, CLIENT_ID].map((id) => createBootstrapToken(deps, { id, profile: 'mesh-test', principal: 'test' })),
    );
    const agent = (name: string, token: string) => {
      const out = join(dir, name);
      const c = spawnChild(
        keywardArgs(
          'agent',
          '--token',
          token,
          '--out',
          out,
          '--ca-file',
          join(dir, 'roots.pem'),
          '--hook',
          `echo "$KEYWARD_SERIAL" >> ${join(dir, `${name}.hooks`)}`,
        ),
      );
      children.push(c);
      return c;
    };
    const agents = [agent('server', tokens[0]!.token), agent('client', tokens[1]!.token)];
    await Promise.all(agents.map((a) => a.line(/"event":"issued"/)));
    for (const name of ['server', 'client']) {
      expect(statSync(join(dir, name, 'key.pem')).mode & 0o777).toBe(0o600);
      expect(existsSync(join(dir, name, 'bundle.pem'))).toBe(true);
    }

    const server = spawnChild(tsxArgs(PEER, 'server', join(dir, 'server')));
    children.push(server);
    const port = (await server.line(/PORT \d+/)).split(' ')[1]!;
    const client = spawnChild(tsxArgs(PEER, 'client', join(dir, 'client'), port, '9000', SERVER_ID));
    children.push(client);
    expect(await client.exited).toBe(0);
    const result = JSON.parse(client.out()) as {
      ok: number;
      failures: string[];
      serverSerials: string[];
      clientSerials: string[];
    };
    expect(result.failures, server.err()).toEqual([]);
    expect(result.ok).toBeGreaterThan(20);
    // Renewed on both sides while connections kept working.
    expect(result.serverSerials.length).toBeGreaterThanOrEqual(2);
    expect(result.clientSerials.length).toBeGreaterThanOrEqual(2);
    for (const a of agents) expect(a.out()).toContain('"event":"renewed"');
    const hooks = readFileSync(join(dir, 'client.hooks'), 'utf8').trim().split('\n');
    expect(hooks.length).toBeGreaterThanOrEqual(3); // issued + at least two renewals
    // The bootstrap tokens are spent.
    const used = await ca.ctx.database.db
      .selectFrom('mesh_tokens')
      .select('used_at')
      .where(
        'jti',
        'in',
        tokens.map((t) => t.jti),
      )
      .execute();
    expect(used.every((u) => u.used_at !== null)).toBe(true);
  });

  it('agent --once exits after the first certificate; a spent token makes it fail clearly', async () => {
    const deps = { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance };
    const { token } = await createBootstrapToken(deps, { id: CLIENT_ID, profile: 'mesh-test', principal: 'test' });
    // In this process: the command line's exit status and error, as the binary would give them.
    const agentOnce = (out: string) =>
      cli(['agent', '--token', token, '--out', join(dir, out), '--ca-file', join(dir, 'roots.pem'), '--once'], {});
    const once = await agentOnce('once');
    expect(once.code, once.stderr).toBe(0);
    expect(readFileSync(join(dir, 'once', 'cert.pem'), 'utf8')).toContain('BEGIN CERTIFICATE');
    const spent = await agentOnce('spent');
    expect(spent.code).toBe(1);
    expect(spent.stderr).toContain('already used');
  });
});
