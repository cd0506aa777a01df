import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { waitFor } from '../revocation/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr } from '../support/openssl.ts';
import { tempDir } from '../support/pki.ts';

interface IssuerJson {
  id: string;
  kind: string;
  state: string;
  parentId: string | null;
  profiles: string[];
}

const blockCount = (pem: string) => (pem.match(/BEGIN CERTIFICATE/g) ?? []).length;

// Every issuer command with --json while `keyward serve` runs: on PGlite the command reaches the
// server through its admin socket; on PostgreSQL it runs in a context of its own, as from another
// host, and the server learns of the change only by NOTIFY keyward_issuers. Either way the server
// uses the change without a restart, and each change is one audit event naming the issuer.
describe('issuer commands against a running server', () => {
  let ca: TestCa;
  let files: ReturnType<typeof tempDir>;
  const keyward = async <T>(args: string[]): Promise<T> => {
    const r = await cli([...args, '--json'], ca.env);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  /** The success events of one action about one issuer (the server appends others meanwhile). */
  const audited = async (action: string, issuer: string) =>
    (
      await ca.ctx.database.db
        .selectFrom('audit_events')
        .select(['principal', 'outcome', 'context'])
        .where('action', '=', action)
        .execute()
    ).filter((e) => (e.context as Record<string, unknown>).issuer === issuer);
  const serverSigns = (profile: string, id: string) =>
    waitFor(
      `the server to sign ${profile} with ${id}`,
      async () => (await ca.ctx.ca.issuerForProfile(profile)).id === id,
      5_000,
    );

  beforeAll(async () => {
    ca = await startTestCa();
    files = tempDir('kw-issuers-server-');
  });
  afterAll(async () => {
    await ca?.close();
    files?.cleanup();
  });

  it('add-intermediate, activate, rotate-intermediate, retire, rotate-root, export-cross-signed, sign-intermediate, adopt', async () => {
    const listed = await keyward<IssuerJson[]>(['ca', 'issuers']);
    expect(listed.map((i) => i.kind)).toEqual(['root', 'intermediate']);
    const oldRoot = listed[0]!;

    const added = await keyward<IssuerJson>(['ca', 'add-intermediate', '--profiles', 'mtls']);
    expect([added.state, added.profiles]).toEqual(['pending', ['mtls']]);
    expect(await audited('add-issuer', added.id)).toEqual([
      expect.objectContaining({ outcome: 'success', principal: expect.stringMatching(/^cli:/) }),
    ]);

    const activated = await keyward<IssuerJson>(['ca', 'activate', added.id]);
    expect(activated.state).toBe('active');
    await serverSigns('mtls', added.id);
    expect((await audited('issuer-state', added.id)).map((e) => e.context)).toEqual([
      { issuer: added.id, from: 'pending', to: 'active' },
    ]);

    const rotated = await keyward<{ old: IssuerJson; new: IssuerJson }>(['ca', 'rotate-intermediate', added.id]);
    expect([rotated.old.state, rotated.new.state, rotated.new.profiles]).toEqual(['retiring', 'active', ['mtls']]);
    await serverSigns('mtls', rotated.new.id);
    expect((await audited('add-issuer', rotated.new.id))[0]?.context).toMatchObject({ replaces: added.id });

    // It signed nothing, so retiring it retires it outright.
    const retired = await keyward<IssuerJson>(['ca', 'retire', added.id]);
    expect(retired.state).toBe('retired');
    expect((await audited('issuer-state', added.id)).map((e) => (e.context as { to: string }).to)).toEqual([
      'active',
      'retiring',
      'retired',
    ]);

    // The server's /roots.pem (from its issuer cache) lists the new root as soon as it is made.
    const rolled = await keyward<{ old: IssuerJson; new: IssuerJson; crossCertificates: unknown[] }>([
      'ca',
      'rotate-root',
    ]);
    expect(rolled.old.id).toBe(oldRoot.id);
    await waitFor(
      'the server to list both roots',
      async () => blockCount(await (await fetch(`${ca.httpUrl}/roots.pem`)).text()) === 2,
      5_000,
    );
    expect(await audited('rotate-root', rolled.new.id)).toHaveLength(1);
    const cross = await keyward<{ subjectIssuerId: string; signerIssuerId: string }[]>(['ca', 'export-cross-signed']);
    expect(cross.map((x) => [x.subjectIssuerId, x.signerIssuerId]).sort()).toEqual(
      [
        [rolled.new.id, oldRoot.id],
        [oldRoot.id, rolled.new.id],
      ].sort(),
    );

    // A key held elsewhere, certified by our (new) root, then brought in and adopted for mtls.
    const outside = opensslCsr({ subject: '/CN=Outside Intermediate' });
    const signed = await keyward<{ serial: string; rootId: string; pem: string }>([
      'ca',
      'sign-intermediate',
      '--csr',
      join(outside.dir, 'req.csr'),
    ]);
    expect(signed.rootId).toBe(rolled.new.id);
    const signedEvents = await ca.ctx.database.db
      .selectFrom('audit_events')
      .select('context')
      .where('action', '=', 'sign-intermediate')
      .execute();
    expect(signedEvents.map((e) => JSON.stringify(e.context))).toEqual([expect.stringContaining(signed.serial)]);

    const cert = files.file('outside.pem', signed.pem);
    const imported = await keyward<{ keyId: string }>([
      'kms',
      'import',
      '--key',
      join(outside.dir, 'key.pem'),
      '--cert',
      cert,
    ]);
    const adopted = await keyward<{ issuer: IssuerJson }>([
      'ca',
      'adopt',
      '--key-id',
      imported.keyId,
      '--cert',
      cert,
      '--profiles',
      'mtls',
      '--activate',
    ]);
    expect([adopted.issuer.state, adopted.issuer.parentId]).toEqual(['active', rolled.new.id]);
    await serverSigns('mtls', adopted.issuer.id);
    expect(await audited('adopt-issuer', adopted.issuer.id)).toHaveLength(1);
  });
});
