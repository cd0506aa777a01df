import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';

import { loadConfig } from '../../src/config/load.ts';
import { openContext } from '../../src/context.ts';
import { cli } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { opensslCsr } from '../support/openssl.ts';

// The CA keys never rest in plaintext: a wrong root key, or an altered or swapped blob, is refused
// with a message that names the problem, never a crash or a garbage key. Commands run in-process
// (cli), each opening the CA as the binary does.
describe('key protection', () => {
  const stores: TestStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.cleanup()));
  });

  async function initialised(
    settings = '',
  ): Promise<{ store: TestStore; configFile: string; env: Record<string, string> }> {
    const store = await createTestStore();
    stores.push(store);
    const configFile = join(store.dataDir, 'keyward.yaml');
    writeFileSync(configFile, settings);
    return { store, configFile, env: { ...store.env, KEYWARD_CONFIG: configFile } };
  }

  async function openCa(configFile: string, env: Record<string, string>) {
    return openContext(loadConfig({ configFile, env }));
  }

  async function issueOne(ctx: Awaited<ReturnType<typeof openCa>>) {
    const { csrPem } = opensslCsr({ san: 'DNS:a.internal' });
    const { parseCsr } = await import('../../src/ca/csr.ts');
    const csr = parseCsr(csrPem);
    return ctx.ca.issue({
      subjectPublicKeyInfo: csr.subjectPublicKeyInfo,
      keyType: csr.keyType,
      sans: csr.sans,
      profile: 'tls-server',
      requester: 'test',
    });
  }

  it('stores no plaintext key: the key file holds the root key only, the database only KWE1 blobs', async () => {
    const { configFile, env, store } = await initialised();
    const ctx = await openCa(configFile, env);
    await ctx.ca.init(
      { organization: 'T', root: ctx.config.ca.root, intermediate: ctx.config.ca.intermediate },
      'test',
    );
    const keys = await ctx.database.db
      .selectFrom('kms_keys')
      .select(['dek_wrapped', 'key_ciphertext', 'kek_version'])
      .execute();
    expect(keys).toHaveLength(2);
    for (const k of keys) {
      expect(Buffer.from(k.key_ciphertext!).subarray(0, 4).toString()).toBe('KWE1');
      expect(Buffer.from(k.dek_wrapped!).subarray(0, 4).toString()).toBe('KWE1');
      // A PKCS#8 EC key starts with SEQUENCE, INTEGER 0, SEQUENCE { ecPublicKey }: not findable here.
      expect(Buffer.from(k.key_ciphertext!).includes(Buffer.from('2a8648ce3d0201', 'hex'))).toBe(false);
      expect(k.kek_version).toBe(1);
    }
    await ctx.close();
    expect(store.dataDir).toBeTruthy();
  });

  it('refuses a wrong root key file by name, before touching any key', async () => {
    const { configFile, env, store } = await initialised();
    const init = await cli(['init'], env);
    expect(init.code, init.stderr).toBe(0);
    writeFileSync(join(store.dataDir, 'root.key'), randomBytes(32).toString('base64'));
    const r = await cli(['issue', '--csr', join(opensslCsr({ san: 'DNS:x.internal' }).dir, 'req.csr')], env);
    expect(r.code).toBe(2); // configuration: the key file does not match
    expect(r.stderr).toMatch(/WrongRootKey: root key file .*root\.key does not match root [0-9a-f-]{36}/);
    await expect(openCa(configFile, env)).rejects.toThrow(/does not match root/);
  });

  it('refuses an altered wrapped CA key with a clear message', async () => {
    const { configFile, env } = await initialised();
    let ctx = await openCa(configFile, env);
    await ctx.ca.init(
      { organization: 'T', root: ctx.config.ca.root, intermediate: ctx.config.ca.intermediate },
      'test',
    );
    await sql`UPDATE kms_keys SET key_ciphertext = overlay(key_ciphertext placing '\\xff'::bytea from 80 for 1) WHERE usage = 'intermediate'`.execute(
      ctx.database.db,
    );
    await ctx.close();
    ctx = await openCa(configFile, env);
    try {
      await expect(issueOne(ctx)).rejects.toThrow(/failed authentication \(altered, swapped or wrong key\)/);
      expect(await ctx.database.db.selectFrom('certificates').select('serial').execute()).toHaveLength(0);
    } finally {
      await ctx.close();
    }
  });

  it('refuses a wrapped key swapped onto another key id', async () => {
    const { configFile, env } = await initialised();
    let ctx = await openCa(configFile, env);
    await ctx.ca.init(
      { organization: 'T', root: ctx.config.ca.root, intermediate: ctx.config.ca.intermediate },
      'test',
    );
    // Both rows move their blobs onto the other: the AAD binds each to its own key id and usage.
    await sql`UPDATE kms_keys k SET dek_wrapped = o.dek_wrapped, key_ciphertext = o.key_ciphertext
              FROM kms_keys o WHERE k.usage = 'intermediate' AND o.usage = 'root-ca'`.execute(ctx.database.db);
    await ctx.close();
    ctx = await openCa(configFile, env);
    try {
      await expect(issueOne(ctx)).rejects.toThrow(/failed authentication/);
    } finally {
      await ctx.close();
    }
  });

  it('a passphrase root: the right passphrase opens it, a wrong or missing one is refused', async () => {
    const { configFile, env } = await initialised('rootOfTrust:\n  type: passphrase\n');
    const good = { ...env, KEYWARD_PASSPHRASE: 'correct horse battery staple' };
    const init = await cli(['init', '--json'], good);
    expect(init.code, init.stderr).toBe(0);
    const { dir } = opensslCsr({ san: 'DNS:p.internal' });
    const ok = await cli(['issue', '--csr', join(dir, 'req.csr')], good);
    expect(ok.code, ok.stderr).toBe(0);
    const wrong = await cli(['issue', '--csr', join(dir, 'req.csr')], {
      ...env,
      KEYWARD_PASSPHRASE: 'Tr0ub4dor&3',
    });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/the passphrase does not match root/);
    const missing = await cli(['certs', 'list'], env);
    expect(missing.code).toBe(5); // the key is unavailable until a passphrase is given
    expect(missing.stderr).toMatch(/none was given \(set KEYWARD_PASSPHRASE/);
    const ctx = await openCa(configFile, good);
    const root = await ctx.database.db.selectFrom('kms_roots').select(['provider', 'params']).executeTakeFirstOrThrow();
    expect(root.provider).toBe('passphrase');
    expect(root.params).toMatchObject({ kdf: 'scrypt', N: 131072, r: 8, p: 1 });
    await ctx.close();
  });

  it('the audit log names the first edited, deleted or inserted event', async () => {
    const { configFile, env } = await initialised();
    const ctx = await openCa(configFile, env);
    try {
      await ctx.ca.init(
        { organization: 'T', root: ctx.config.ca.root, intermediate: ctx.config.ca.intermediate },
        'test',
      );
      await issueOne(ctx);
      await issueOne(ctx);
      const verifyAudit = (db: typeof ctx.database.db) => ctx.kms.audit.verify(db);
      const intact = await verifyAudit(ctx.database.db);
      expect(intact.ok).toBe(true);
      expect(intact.events).toBeGreaterThanOrEqual(8);
      const db = ctx.database.db;

      await sql`UPDATE audit_events SET principal = 'mallory' WHERE seq = 5`.execute(db);
      expect(await verifyAudit(db)).toMatchObject({ ok: false, firstBad: { seq: 5, problem: 'edited' } });
      await sql`UPDATE audit_events SET principal = 'test' WHERE seq = 5`.execute(db);
      expect((await verifyAudit(db)).ok).toBe(true);

      const saved = await db.selectFrom('audit_events').selectAll().where('seq', '=', 4).executeTakeFirstOrThrow();
      await db.deleteFrom('audit_events').where('seq', '=', 4).execute();
      expect(await verifyAudit(db)).toMatchObject({ ok: false, firstBad: { seq: 4, problem: 'deleted' } });

      // Re-inserting a forged row at the gap with a self-consistent hash still breaks the link.
      const { legacyEventHash: eventHash } = await import('../../src/kms/audit.ts');
      const forgedPrev = Buffer.alloc(32, 7);
      const forged = {
        ...saved,
        seq: 4,
        prev_hash: forgedPrev,
        principal: 'mallory',
        context: JSON.stringify(saved.context),
      };
      forged.hash = eventHash(forgedPrev, {
        ...saved,
        seq: 4,
        ts: new Date(saved.ts).toISOString(),
        principal: 'mallory',
        context: saved.context,
      });
      await db.insertInto('audit_events').values(forged).execute();
      expect(await verifyAudit(db)).toMatchObject({
        ok: false,
        firstBad: { seq: 4, problem: 'inserted-or-reordered' },
      });

      const verify = await cli(['audit', 'verify'], env, { context: ctx });
      expect(verify.code).toBe(1);
      expect(verify.stdout).toContain('The audit log is broken at event 4');
    } finally {
      await ctx.close();
    }
  });
});
