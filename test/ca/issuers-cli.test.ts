import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { type TestCa, testCaTemplate } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr, opensslVerify } from '../support/openssl.ts';

interface IssuerJson {
  id: string;
  kind: string;
  state: string;
  parentId: string | null;
  keyType: string;
  profiles: string[];
  certificatesIssued: number;
}

// The operator's path through the command line (in-process, on a CA of each case's own): list,
// add, activate, issue, rotate.

// One CA per file; each case works on a copy of it (testCaTemplate).
let template: Awaited<ReturnType<typeof testCaTemplate>>;
beforeAll(async () => {
  template = await testCaTemplate();
});
afterAll(async () => template?.close());

describe('keyward ca issuers, add-intermediate, activate, rotate-intermediate', () => {
  let ca: TestCa;
  let env: Record<string, string>;
  let rootPem: string;
  const keyward = (args: string[], e: Record<string, string>) => cli(args, e, { context: ca.ctx });

  beforeEach(async () => {
    ca = await template.copy();
    env = ca.env;
    rootPem = ca.rootPem;
  });
  afterEach(async () => ca?.close());

  it('lists the tree with states, key types and counts, adds an RSA intermediate for mtls and activates it', async () => {
    const list = await keyward(['ca', 'issuers', '--json'], env);
    expect(list.code, list.stderr).toBe(0);
    const [root, inter] = JSON.parse(list.stdout) as IssuerJson[];
    expect([root!.kind, root!.state, root!.keyType]).toEqual(['root', 'active', 'ecdsa-p384']);
    expect([inter!.kind, inter!.state, inter!.keyType, inter!.parentId]).toEqual([
      'intermediate',
      'active',
      'ecdsa-p256',
      root!.id,
    ]);

    const bad = await keyward(['ca', 'add-intermediate', '--profiles', 'nope'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--profiles: unknown profile "nope"');

    const add = await keyward(
      ['ca', 'add-intermediate', '--profiles', 'mtls', '--key-type', 'rsa-3072', '--json'],
      env,
    );
    expect(add.code, add.stderr).toBe(0);
    const added = JSON.parse(add.stdout) as IssuerJson;
    expect([added.state, added.keyType, added.profiles, added.parentId]).toEqual([
      'pending',
      'rsa-3072',
      ['mtls'],
      root!.id,
    ]);

    const act = await keyward(['ca', 'activate', added.id], env);
    expect(act.code, act.stderr).toBe(0);
    expect(act.stdout).toContain(`Issuer ${added.id} is active.`);

    const { dir } = opensslCsr({ san: 'DNS:svc.internal' });
    const issued = await keyward(['issue', '--csr', join(dir, 'req.csr'), '--profile', 'mtls'], env);
    expect(issued.code, issued.stderr).toBe(0);
    const db = ca.ctx.database.db;
    const { toPem } = await import('../../src/ca/pem.ts');
    const rows = await db.selectFrom('issuers').selectAll().execute();
    expect(toPem(rows.find((r) => r.kind === 'root')!.certificate)).toBe(rootPem);
    expect(issued.stdout).toContain(toPem(rows.find((r) => r.id === added.id)!.certificate));
    const audit = await db.selectFrom('audit_events').select(['action', 'principal']).execute();
    expect(audit.map((e) => e.action)).toEqual(expect.arrayContaining(['add-issuer', 'issuer-state']));
    expect(opensslVerify(rootPem, issued.stdout).ok).toBe(true);

    const tree = await keyward(['ca', 'issuers'], env);
    expect(tree.code, tree.stderr).toBe(0);
    expect(tree.stdout).toMatch(/rsa-3072 .*1 issued \(1 unexpired\)\s+profiles: mtls/);
  });

  it('rotate-intermediate replaces the default issuer; the tree shows the old one retiring', async () => {
    const list = JSON.parse((await keyward(['ca', 'issuers', '--json'], env)).stdout) as IssuerJson[];
    const old = list.find((i) => i.kind === 'intermediate' && i.profiles.length === 0)!;
    const rot = await keyward(['ca', 'rotate-intermediate', old.id, '--json'], env);
    expect(rot.code, rot.stderr).toBe(0);
    const out = JSON.parse(rot.stdout) as { old: IssuerJson; new: IssuerJson };
    expect([out.old.state, out.new.state, out.new.keyType]).toEqual(['retiring', 'active', 'ecdsa-p256']);

    const { dir } = opensslCsr({ san: 'DNS:web.internal' });
    const issued = await keyward(['issue', '--csr', join(dir, 'req.csr'), '--json'], env);
    expect(issued.code, issued.stderr).toBe(0);
    expect(opensslVerify(rootPem, JSON.parse(issued.stdout).chainPem).ok).toBe(true);

    const tree = await keyward(['ca', 'issuers'], env);
    expect(tree.code, tree.stderr).toBe(0);
    expect(tree.stdout).toMatch(new RegExp(`^root [0-9a-f]{16}  active  ecdsa-p384`, 'm'));
    expect(tree.stdout).toMatch(new RegExp(`└ intermediate ${old.id}  retiring  ecdsa-p256 .*profiles: \\(default\\)`));
    expect(tree.stdout).toMatch(
      new RegExp(`└ intermediate ${out.new.id}  active  ecdsa-p256 .*1 issued \\(1 unexpired\\)`),
    );

    const missing = await keyward(['ca', 'retire', 'abc'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('"abc" is not an issuer id');
  });
});

describe('keyward ca rotate-root, export-cross-signed, retire ROOT', () => {
  let ca: TestCa;
  const keyward = (args: string[]) => cli(args, ca.env, { context: ca.ctx });

  beforeEach(async () => {
    ca = await template.copy();
  });
  afterEach(async () => ca?.close());

  it('rolls the root over, prints both cross-certificates, and refuses to retire a root an intermediate still needs', async () => {
    const rot = await keyward(['ca', 'rotate-root', '--json']);
    expect(rot.code, rot.stderr).toBe(0);
    const out = JSON.parse(rot.stdout) as {
      old: IssuerJson;
      new: IssuerJson;
      crossCertificates: { subjectIssuerId: string }[];
    };
    expect([out.old.state, out.new.state, out.new.keyType]).toEqual(['retiring', 'active', 'ecdsa-p384']);
    expect(out.crossCertificates.map((x) => x.subjectIssuerId).sort()).toEqual([out.old.id, out.new.id].sort());

    const exported = await keyward(['ca', 'export-cross-signed']);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(exported.stdout).toContain(`# root ${out.new.id} certified by root ${out.old.id}`);

    const retire = await keyward(['ca', 'retire', out.old.id]);
    expect(retire.code).toBe(4);
    expect(retire.stderr).toMatch(/still signs; rotate it \(ca rotate-intermediate\) first/);
  });
});
