import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DualControl } from '../../src/kms/dual-control.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr } from '../support/openssl.ts';

// kms.dualControl: one administrator proposes a trust-changing command, another approves it. The
// local CLI is one principal (cli:<user>, through the admin socket or in-process); holders of admin
// certificates on the HTTPS admin endpoint are others (admin:<name>).
describe('dual control', () => {
  let ca: TestCa;
  let dir: string;
  const admins: Record<'alice' | 'bob', string[]> = { alice: [], bob: [] };
  const run = (args: string[]) => cli(args, ca.env, { context: ca.ctx });
  const as = (who: 'alice' | 'bob', args: string[]) => run([...args, ...admins[who]]);
  const keyState = async (id: string) =>
    (await ca.ctx.database.db.selectFrom('kms_keys').select('state').where('id', '=', id).executeTakeFirstOrThrow())
      .state;
  const events = async (proposal: string) =>
    (
      await ca.ctx.database.db
        .selectFrom('audit_events')
        .select(['principal', 'action', 'outcome', 'error_code', 'key_id', 'context'])
        .orderBy('seq')
        .execute()
    ).filter((e) => JSON.stringify(e.context).includes(proposal) || e.action === 'schedule-deletion');

  beforeAll(async () => {
    ca = await startTestCa({ settings: { kms: { dualControl: true } } });
    dir = mkdtempSync(join(tmpdir(), 'kw-dual-'));
    const rootFile = join(dir, 'root.pem');
    writeFileSync(rootFile, ca.rootPem);
    for (const who of ['alice', 'bob'] as const) {
      const csr = opensslCsr({ subject: `/CN=${who}`, san: `email:${who}@example.test` });
      writeFileSync(join(dir, `${who}.csr`), csr.csrPem);
      const cert = await run(['issue', '--csr', join(dir, `${who}.csr`), '--profile', 'admin']);
      expect(cert.code, cert.stderr).toBe(0);
      writeFileSync(join(dir, `${who}.pem`), cert.stdout);
      writeFileSync(join(dir, `${who}.key`), csr.keyPem);
      admins[who] = [
        '--admin-url',
        ca.httpsUrl,
        '--admin-cert',
        join(dir, `${who}.pem`),
        '--admin-key',
        join(dir, `${who}.key`),
        '--admin-ca',
        rootFile,
      ];
    }
  });

  afterAll(async () => {
    await ca?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a deletion only proposes; the proposer cannot approve it; another administrator approves and it runs; each step is audited', async () => {
    const created = await run(['kms', 'create', '--usage', 'intermediate', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const keyId = (JSON.parse(created.stdout) as { id: string }).id;

    const proposed = await run(['kms', 'schedule-deletion', keyId, '--days', '7']);
    expect(proposed.code, proposed.stderr).toBe(0);
    expect(proposed.stdout).toMatch(/proposal p-[0-9a-f]{12} \(schedule deletion of .+ in 7 days\) waits/);
    expect(proposed.stdout).toMatch(/Nothing has changed yet/);
    const id = /proposal (p-[0-9a-f]{12})/.exec(proposed.stdout)![1]!;
    expect(await keyState(keyId)).toBe('Enabled');

    const listed = await as('bob', ['proposals', 'list', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ id, command: 'kms.schedule-deletion', state: 'pending', proposer: 'cli:root' }),
    ]);

    const self = await run(['proposals', 'approve', id]);
    expect(self.code).toBe(1);
    expect(self.stderr).toMatch(/cli:root proposed p-[0-9a-f]+; another administrator must approve it/);
    expect(await keyState(keyId)).toBe('Enabled');

    const approved = await as('alice', ['proposals', 'approve', id]);
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toMatch(/Approved p-[0-9a-f]+ .* proposed by cli:root/);
    expect(approved.stdout).toMatch(/PendingDeletion; it will be destroyed at/);
    expect(await keyState(keyId)).toBe('PendingDeletion');

    const again = await as('bob', ['proposals', 'approve', id]);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/is executed, not pending/);

    const steps = (await events(id)).map((e) => [e.action, e.principal, e.outcome]);
    expect(steps).toEqual([
      ['propose', 'cli:root', 'success'],
      ['approve', 'cli:root', 'denied'],
      ['approve', 'admin:alice@example.test', 'success'],
      ['schedule-deletion', 'cli:root', 'success'],
      ['approve', 'admin:bob@example.test', 'denied'],
    ]);
  });

  it('an expired proposal cannot be approved; a rejected one never runs', async () => {
    const created = await run(['kms', 'create', '--usage', 'intermediate', '--json']);
    const keyId = (JSON.parse(created.stdout) as { id: string }).id;
    // A window of one millisecond: expired by the time anyone could approve it.
    const quick = new DualControl(ca.ctx.kms, ca.ctx.database.db, 1);
    const stale = await quick.propose(
      'kms.disable',
      `disable the intermediate key ${keyId}`,
      { key: keyId, force: false },
      'admin:bob@example.test',
    );
    const expired = await as('alice', ['proposals', 'approve', stale.id]);
    expect(expired.code).toBe(4);
    expect(expired.stderr).toMatch(new RegExp(`proposal ${stale.id} expired at .*; propose it again`));
    expect(await keyState(keyId)).toBe('Enabled');

    const disable = await run(['kms', 'disable', keyId]);
    expect(disable.code, disable.stderr).toBe(0);
    const id = /proposal (p-[0-9a-f]{12})/.exec(disable.stdout)![1]!;
    const rejected = await as('alice', ['proposals', 'reject', id]);
    expect(rejected.code, rejected.stderr).toBe(0);
    expect(rejected.stdout).toMatch(/is rejected; nothing was run/);
    const late = await as('bob', ['proposals', 'approve', id]);
    expect(late.stderr).toMatch(/is rejected, not pending/);
    expect(await keyState(keyId)).toBe('Enabled');
  });

  it('keys that are not CA keys are disabled at once; the stored input reveals no secret', async () => {
    const appKey = await run(['kms', 'create-key', 'app-secrets', '--allow', 'svc:a']);
    expect(appKey.code, appKey.stderr).toBe(0);
    const disabled = await run(['kms', 'disable', 'app-secrets']);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(disabled.stdout).toMatch(/is now Disabled/);

    const passFile = join(dir, 'new-root.pass');
    writeFileSync(passFile, 'correct horse battery staple\n');
    const rotate = await run(['kms', 'rotate-root', '--to', 'passphrase', '--passphrase-file', passFile]);
    expect(rotate.code, rotate.stderr).toBe(0);
    expect(rotate.stdout).toMatch(/move every KEK to a new passphrase root of trust/);
    const rows = await ca.ctx.database.db.selectFrom('kms_proposals').select(['sealed_input', 'summary']).execute();
    for (const row of rows) expect(Buffer.from(row.sealed_input).toString('latin1')).not.toContain('horse');
  });
});
