import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { AppContext } from '../../src/context.ts';
import type { KeySummary } from '../../src/kms/inventory.ts';
import type { RotateRootResult } from '../../src/kms/rotate-root.ts';
import { type TestCa, testCaTemplate } from '../support/ca.ts';
import { keyward } from '../support/cli.ts';
import { tempDir } from '../support/openssl.ts';
import { issueLeaf, kmsCli, restart } from './helpers.ts';

const SOFTHSM = '/usr/lib/softhsm/libsofthsm2.so';

// A SoftHSM2 token of our own (pitfall 8: token dirs per test). SoftHSM reads SOFTHSM2_CONF when the
// module is initialised, which happens once per process, so it is set before any test runs. This
// file shares its worker process with others (vitest.config.ts), none of which loads PKCS#11.
const hsmDir = tempDir('kw-softhsm-');
const confBefore = process.env.SOFTHSM2_CONF;
afterAll(() => {
  if (confBefore === undefined) delete process.env.SOFTHSM2_CONF;
  else process.env.SOFTHSM2_CONF = confBefore;
});
beforeAll(() => {
  mkdirSync(join(hsmDir, 'tokens'));
  writeFileSync(
    join(hsmDir, 'softhsm2.conf'),
    `directories.tokendir = ${join(hsmDir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  process.env.SOFTHSM2_CONF = join(hsmDir, 'softhsm2.conf');
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', 'keyward-test', '--so-pin', '12345678', '--pin', '87654321'],
    { env: process.env, stdio: 'pipe' },
  );
  writeFileSync(join(hsmDir, 'pin'), '87654321\n', { mode: 0o600 });
});

// One CA per file; each case works on a copy of it (testCaTemplate).
let template: Awaited<ReturnType<typeof testCaTemplate>>;
beforeAll(async () => {
  template = await testCaTemplate();
});
afterAll(async () => template?.close());

describe('roots of trust and rotate-root', () => {
  let ca: TestCa;
  let ctx: AppContext;
  beforeEach(async () => {
    ca = await template.copy();
    ctx = ca.ctx;
  });
  afterEach(async () => {
    await ctx.close().catch(() => undefined);
    await ca.store.cleanup();
  });
  const reopen = async () => (ctx = await restart(ctx, ca.configFile, ca.env));
  const pkcs11Args = (label: string) => ({
    to: 'pkcs11',
    module: SOFTHSM,
    token: 'keyward-test',
    'key-label': label,
    'pin-file': join(hsmDir, 'pin'),
  });

  it('file → pkcs11: KEKs are wrapped inside the token (GCM via C_Encrypt); a restart unwraps through it', async () => {
    await issueLeaf(ctx);
    await kmsCli(ctx, ['kms', 'rotate'], {}, []);
    const out = await kmsCli<RotateRootResult>(ctx, ['kms', 'rotate-root'], pkcs11Args('root-a'));
    // ca-keys v1 and v2, and the audit chain key.
    expect(out).toMatchObject({ provider: 'pkcs11', kekVersions: 3, rewrapped: 3 });
    await issueLeaf(ctx);
    const roots = (await kmsCli<KeySummary[]>(ctx, ['kms', 'list'])).filter((k) => k.kind === 'root-of-trust');
    expect(roots.map((r) => [r.name, r.state])).toEqual([
      ['file', 'Retired'],
      ['pkcs11', 'Enabled'],
    ]);
    const versions = await ctx.database.db.selectFrom('kms_kek_versions').selectAll().execute();
    for (const v of versions) {
      expect(v.root_id).toBe(out.rootId);
      expect(v.next_wrapped).toBeNull();
      expect(Buffer.from(v.wrapped)[4]).toBe(0x02);
    }
    // The token key is sensitive and not extractable.
    const objects = execFileSync(
      'pkcs11-tool',
      [
        '--module',
        SOFTHSM,
        '--token-label',
        'keyward-test',
        '--login',
        '--pin',
        '87654321',
        '--list-objects',
        '--type',
        'secrkey',
      ],
      { env: process.env, encoding: 'utf8' },
    );
    expect(objects).toMatch(/label:\s+root-a/);
    expect(objects).toMatch(/Access:\s+sensitive, always sensitive, never extractable/);

    // The configuration still says "file": the token root is described by the database.
    await reopen();
    await issueLeaf(ctx);
    await kmsCli(ctx, ['kms', 'rotate'], {}, []);
    await issueLeaf(ctx);
  });

  it('pkcs11 errors are named: wrong PIN (in a new process), missing key', async () => {
    await kmsCli(ctx, ['kms', 'rotate-root'], pkcs11Args('root-b'));
    await ctx.close();
    // Login state is per process in PKCS#11, so a wrong PIN shows in a fresh process: the CLI.
    const env = { ...ca.env, SOFTHSM2_CONF: process.env.SOFTHSM2_CONF! };
    const pin = join(hsmDir, 'pin');
    writeFileSync(pin, '00000000\n');
    try {
      const r = await keyward(['kms', 'list'], env);
      expect(r.code).toBe(2); // configuration: the token refused the PIN
      expect(r.stderr).toMatch(/the token refused the PIN \(CKR_PIN_INCORRECT\)/);
      expect(r.stderr).not.toContain('00000000');
    } finally {
      writeFileSync(pin, '87654321\n');
    }
    const ok = await keyward(['kms', 'list', '--json'], env);
    expect(ok.code, ok.stderr).toBe(0);
    ctx = await restart({ close: async () => undefined } as AppContext, ca.configFile, ca.env);
    await sql`UPDATE kms_roots SET params = jsonb_set(params, '{keyLabel}', '"no-such-key"') WHERE state = 'Enabled'`.execute(
      ctx.database.db,
    );
    await expect(reopen()).rejects.toThrow(/no AES key labelled "no-such-key" in PKCS#11 token "keyward-test"/);
  });

  it('an altered token-wrapped KEK fails authentication in the token', async () => {
    await kmsCli(ctx, ['kms', 'rotate-root'], pkcs11Args('root-c'));
    await sql`UPDATE kms_kek_versions SET wrapped = overlay(wrapped placing '\\xff'::bytea from 45 for 1)
      WHERE kek_id = (SELECT id FROM kms_keks WHERE name = 'ca-keys')`.execute(ctx.database.db);
    await reopen();
    await expect(issueLeaf(ctx)).rejects.toThrow(/failed authentication in the token/);
  });

  it('file → passphrase is resumable after a crash midway, and the old root key file is no longer needed', async () => {
    for (let i = 0; i < 3; i++) await kmsCli(ctx, ['kms', 'rotate'], {}, []);
    const pf = join(ca.store.dataDir, 'new-pass');
    writeFileSync(pf, 'correct horse battery staple\n');
    let seen = 0;
    const { rotateRoot } = await import('../../src/kms/rotate-root.ts');
    const target = { type: 'passphrase' as const, passphrase: 'correct horse battery staple' };
    // Crash after two versions are re-wrapped: both blobs stay valid, the old root keeps working.
    await expect(
      rotateRoot(ctx.kms, ctx.database.db, target, 'test', (p) => {
        seen = p.done;
        if (p.done === 2) throw new Error('simulated crash');
      }),
    ).rejects.toThrow('simulated crash');
    expect(seen).toBe(2);
    await reopen();
    await issueLeaf(ctx);
    const out = await kmsCli<RotateRootResult>(ctx, ['kms', 'rotate-root'], {
      to: 'passphrase',
      'passphrase-file': pf,
    });
    expect(out).toMatchObject({ provider: 'passphrase', kekVersions: 5, rewrapped: 3 });
    await issueLeaf(ctx);
    // Next start: the configuration names the passphrase root; the root key file can go.
    writeFileSync(ca.configFile, readFileSync(ca.configFile, 'utf8') + 'rootOfTrust:\n  type: passphrase\n');
    writeFileSync(join(ca.store.dataDir, 'root.key'), '');
    ctx = await restart(ctx, ca.configFile, { ...ca.env, KEYWARD_PASSPHRASE: 'correct horse battery staple' });
    await issueLeaf(ctx);
    await ctx.close();
    await expect(
      restart({ close: async () => undefined } as AppContext, ca.configFile, {
        ...ca.env,
        KEYWARD_PASSPHRASE: 'wrong',
      }),
    ).rejects.toThrow(/passphrase does not match root/);
    ctx = await restart({ close: async () => undefined } as AppContext, ca.configFile, {
      ...ca.env,
      KEYWARD_PASSPHRASE: 'correct horse battery staple',
    });
  });
});
