import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { toPem } from '../../src/ca/pem.ts';
import { bundlePem } from '../../src/mesh/bundle-refresh.ts';
import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { issueLeaf, waitFor } from '../revocation/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslVerify } from '../support/openssl.ts';
import { keywardArgs, spawnChild } from './helpers.ts';

const blocks = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((b) => `${b}\n`);

// A root rollover reaches a running agent whose certificate is nowhere near renewal: it asks
// /v1/bundle at the CA's refresh hint (1 s here; certificates live an hour) and rewrites bundle.pem.
describe('keyward agent picks up a new root between renewals', () => {
  let ca: TestCa;
  let dir: string;
  const children: Array<ReturnType<typeof spawnChild>> = [];

  beforeAll(async () => {
    ca = await startTestCa({
      settings: {
        mesh: { bundleRefreshHint: '1s' },
        profiles: {
          'mesh-test': {
            extKeyUsages: ['serverAuth', 'clientAuth'],
            defaultLifetime: '1h',
            maxLifetime: '2h',
            sanTypes: ['dns', 'uri'],
          },
        },
      },
    });
    dir = mkdtempSync(join(tmpdir(), 'kw-agent-bundle-'));
    writeFileSync(join(dir, 'roots.pem'), ca.rootPem);
  });
  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGTERM');
    await Promise.all(children.map((c) => c.exited));
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('after ca rotate-root, bundle.pem holds both roots and the hook runs, with no renewal; leaves under the new root then verify with it', async () => {
    const { token } = await createBootstrapToken(
      { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance },
      { id: 'spiffe://prod.example/ns/pay/sa/api', profile: 'mesh-test', principal: 'test' },
    );
    const out = join(dir, 'agent');
    const hooks = join(dir, 'hooks');
    const agent = spawnChild(
      keywardArgs(
        ...['agent', '--token', token, '--out', out, '--ca-file', join(dir, 'roots.pem')],
        ...['--hook', `echo "$KEYWARD_SERIAL $(grep -c BEGIN "$KEYWARD_BUNDLE")" >> ${hooks}`],
      ),
    );
    children.push(agent);
    await agent.line(/"event":"issued"/);
    const cert = readFileSync(join(out, 'cert.pem'), 'utf8');
    const serial = new X509Certificate(blocks(cert)[0]!).serialNumber.toLowerCase();
    expect(blocks(readFileSync(join(out, 'bundle.pem'), 'utf8'))).toEqual([ca.rootPem]);

    const rot = await cli(['ca', 'rotate-root', '--json'], ca.env, { context: ca.ctx });
    expect(rot.code, rot.stderr).toBe(0);
    const { new: newRoot } = JSON.parse(rot.stdout) as { new: { id: string } };
    const rows = await ca.ctx.database.db.selectFrom('issuers').selectAll().execute();
    const newRootPem = toPem(rows.find((r) => r.id === newRoot.id)!.certificate);

    await agent.line(/"event":"bundle-updated","roots":2/);
    expect(blocks(readFileSync(join(out, 'bundle.pem'), 'utf8'))).toEqual([ca.rootPem, newRootPem]);
    expect(readFileSync(join(out, 'cert.pem'), 'utf8')).toBe(cert);
    expect(agent.out()).not.toContain('"event":"renewed"');
    // The hook runs after the log line.
    const ran = await waitFor('the hook after the bundle changed', async () => {
      const lines = readFileSync(hooks, 'utf8').trim().split('\n');
      return lines.length >= 2 ? lines : undefined;
    });
    expect(ran).toEqual([`${serial} 1`, `${serial} 2`]);

    // The rollover continues: the intermediate moves under the new root, and a peer's new leaf
    // (which chains only to the new root) is trusted through the bundle the agent already wrote.
    const inter = await ca.ctx.ca.issuerForProfile('mesh-test');
    const moved = await cli(['ca', 'rotate-intermediate', inter.id, '--json'], ca.env, { context: ca.ctx });
    expect(moved.code, moved.stderr).toBe(0);
    const peer = await issueLeaf(ca, { profile: 'mesh-test', name: 'peer.internal' });
    expect(opensslVerify(ca.rootPem, peer.chainPem).ok).toBe(false);
    const withBundle = opensslVerify(readFileSync(join(out, 'bundle.pem'), 'utf8'), peer.chainPem);
    expect(withBundle.ok, withBundle.output).toBe(true);
  });

  it('a bundle without a CA certificate is refused rather than written', () => {
    expect(() => bundlePem({ keys: [], spiffe_refresh_hint: 60 })).toThrow('the bundle holds no X.509 authority');
    expect(() => bundlePem({ keys: [{ use: 'x509-svid', x5c: [] }] })).toThrow('exactly one certificate');
    const root = Buffer.from(blocks(ca.rootPem)[0]!.split('\n').slice(1, -2).join(''), 'base64').toString('base64');
    expect(bundlePem({ keys: [{ use: 'x509-svid', x5c: [root] }], spiffe_refresh_hint: 7 })).toMatchObject({
      pem: ca.rootPem,
      refreshHintMs: 7000,
    });
  });
});
