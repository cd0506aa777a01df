import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import { commandsByName } from '../../src/cli/registry.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslText } from '../support/openssl.ts';
import { openssl, tempDir } from '../support/pki.ts';

const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

interface Signed {
  serial: string;
  rootId: string;
  subject: string;
  pem: string;
}

/** A key held "elsewhere" (here: a file openssl made) and its CSR. */
function externalCsr(dir: string, name: string): { key: string; csr: string } {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key);
  ossl('req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', csr);
  return { key, csr };
}

// Our root certifies a CA key held elsewhere; relying parties that trust our root accept what it signs.
describe('keyward ca sign-intermediate', () => {
  let ca: TestCa;
  let dir: string;
  const path = (name: string) => join(dir, name);

  beforeAll(async () => {
    ca = await startTestCa();
    dir = tempDir('kw-subca-').path;
    writeFileSync(path('root.pem'), ca.rootPem);
  });
  afterAll(async () => ca?.close());

  it('prints a certificate openssl verifies under our root, which then signs leaves; listed, revocable on the root’s CRL', async () => {
    const ext = externalCsr(dir, 'HSM Intermediate');
    const out = await cli(
      [
        'ca',
        'sign-intermediate',
        '--csr',
        ext.csr,
        '--lifetime',
        '720h',
        '--name-constraints',
        'dns:hsm.internal',
        '--json',
      ],
      ca.env,
      { context: ca.ctx },
    );
    expect(out.code, out.stderr).toBe(0);
    const signed = JSON.parse(out.stdout) as Signed;
    writeFileSync(path('inter.pem'), signed.pem);
    const verified = openssl(['verify', '-CAfile', path('root.pem'), path('inter.pem')]);
    expect(verified.status, verified.stderr).toBe(0);
    const text = opensslText(signed.pem);
    expect(text).toContain('CA:TRUE, pathlen:0');
    expect(text).toMatch(/Permitted:\s*\n\s*DNS:hsm.internal/);
    expect(text).toContain(`URI:${ca.httpUrl}/crl/${signed.rootId}.crl`);
    expect(signed.subject).toContain('CN=HSM Intermediate');

    // The key's holder issues a leaf with it; a client trusting our root accepts the chain.
    ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path('leaf.key'));
    ossl('req', '-new', '-key', path('leaf.key'), '-subj', '/CN=db.hsm.internal', '-out', path('leaf.csr'));
    writeFileSync(path('leaf.ext'), 'subjectAltName=DNS:db.hsm.internal\nbasicConstraints=critical,CA:FALSE\n');
    ossl(
      'x509',
      '-req',
      '-in',
      path('leaf.csr'),
      '-CA',
      path('inter.pem'),
      '-CAkey',
      ext.key,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      path('leaf.ext'),
      '-out',
      path('leaf.pem'),
    );
    const leafOk = openssl(['verify', '-CAfile', path('root.pem'), '-untrusted', path('inter.pem'), path('leaf.pem')]);
    expect(leafOk.status, leafOk.stderr).toBe(0);

    const list = await cli(['ca', 'issuers', '--json'], ca.env, { context: ca.ctx });
    const listed = (JSON.parse(list.stdout) as { id: string; state: string; parentId: string }[]).find(
      (i) => i.id === signed.serial,
    );
    expect(listed).toMatchObject({ state: 'external', parentId: signed.rootId });
    const tree = await cli(['ca', 'issuers'], ca.env, { context: ca.ctx });
    expect(tree.stdout).toContain(`└ intermediate ${signed.serial}  external  key held elsewhere`);

    // Withdrawn: the root's CRL (signed by the root) lists it, and openssl refuses the chain.
    const revoked = await cli(['revoke', signed.serial, '--reason', 'keyCompromise'], ca.env, { context: ca.ctx });
    expect(revoked.code, revoked.stderr).toBe(0);
    await new RevocationPublisher(ca.ctx, 'test').publishCrls({ force: true });
    const crl = await fetch(`${ca.httpUrl}/crl/${signed.rootId}.crl`);
    expect(crl.status).toBe(200);
    writeFileSync(path('root.crl'), new Uint8Array(await crl.arrayBuffer()));
    const crlText = openssl([
      'crl',
      '-inform',
      'DER',
      '-in',
      path('root.crl'),
      '-CAfile',
      path('root.pem'),
      '-verify',
      '-noout',
      '-text',
    ]);
    expect(`${crlText.stdout}${crlText.stderr}`).toContain('verify OK');
    expect(crlText.stdout).toContain(`Serial Number: ${signed.serial.toUpperCase()}`);
    ossl('crl', '-inform', 'DER', '-in', path('root.crl'), '-out', path('root-crl.pem'));
    const refused = openssl([
      'verify',
      '-crl_check',
      '-CAfile',
      path('root.pem'),
      '-CRLfile',
      path('root-crl.pem'),
      path('inter.pem'),
    ]);
    expect(refused.status).not.toBe(0);
    expect(refused.stdout + refused.stderr).toContain('certificate revoked');
    expect((await cli(['ca', 'issuers'], ca.env, { context: ca.ctx })).stdout).toContain(
      `intermediate ${signed.serial}  revoked`,
    );
  });

  it('refuses a path length the root does not allow, and a CSR without a common name; nothing is recorded', async () => {
    const ext = externalCsr(dir, 'Too Deep');
    const deep = await cli(['ca', 'sign-intermediate', '--csr', ext.csr, '--path-len', '2'], ca.env, {
      context: ca.ctx,
    });
    expect(deep.code).toBe(1);
    expect(deep.stderr).toContain('pathLength must be at most 1 under this issuer');
    ossl('req', '-new', '-key', ext.key, '-subj', '/O=No Name', '-out', path('nocn.csr'));
    const nocn = await cli(['ca', 'sign-intermediate', '--csr', path('nocn.csr')], ca.env, { context: ca.ctx });
    expect(nocn.code).toBe(1);
    expect(nocn.stderr).toContain('the CSR has no commonName');
    const rows = await ca.ctx.database.db
      .selectFrom('serial_reservations')
      .select('serial')
      .where('profile', '=', 'external-intermediate')
      .execute();
    expect(rows).toHaveLength(1);
  });
});

describe('keyward ca sign-intermediate under dual control', () => {
  let ca: TestCa;
  let dir: string;

  beforeAll(async () => {
    // Serving, so the CLI reaches this process's database through the admin socket (PGlite admits one process).
    ca = await startTestCa({ settings: { kms: { dualControl: true } } });
    dir = tempDir('kw-subca-dual-').path;
  });
  afterAll(async () => ca?.close());

  it('only proposes; another administrator’s approval signs it', async () => {
    const ext = externalCsr(dir, 'Proposed Intermediate');
    const proposed = await cli(['ca', 'sign-intermediate', '--csr', ext.csr, '--json'], ca.env, { context: ca.ctx });
    expect(proposed.code, proposed.stderr).toBe(0);
    const { proposed: proposal } = JSON.parse(proposed.stdout) as { proposed: { id: string; summary: string } };
    expect(proposal.summary).toMatch(/certify a CA key held elsewhere as an intermediate under the current root/);
    const db = ca.ctx.database.db;
    const count = async () =>
      (await db.selectFrom('certificates').select('serial').where('profile', '=', 'external-intermediate').execute())
        .length;
    expect(await count()).toBe(0);

    const approve = commandsByName.get('proposals.approve')!;
    const approved = (await approve.run(ca.ctx, { id: proposal.id, principal: 'cli:alice' } as never)) as {
      output: Signed;
    };
    expect(await count()).toBe(1);
    writeFileSync(join(dir, 'root.pem'), ca.rootPem);
    writeFileSync(join(dir, 'inter.pem'), approved.output.pem);
    const verified = openssl(['verify', '-CAfile', join(dir, 'root.pem'), join(dir, 'inter.pem')]);
    expect(verified.status, verified.stderr).toBe(0);
    const audit = await db.selectFrom('audit_events').select(['action', 'principal']).execute();
    expect(audit.filter((e) => ['propose', 'approve', 'sign-intermediate'].includes(e.action))).toEqual(
      expect.arrayContaining([
        { action: 'propose', principal: expect.stringMatching(/^cli:/) },
        { action: 'approve', principal: 'cli:alice' },
        { action: 'sign-intermediate', principal: expect.stringMatching(/^cli:/) },
      ]),
    );
    expect(readFileSync(join(dir, 'inter.pem'), 'utf8')).toContain('BEGIN CERTIFICATE');
  });
});
