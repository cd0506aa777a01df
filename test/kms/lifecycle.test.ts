import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { AppContext } from '../../src/context.ts';
import type { KeyDetail, KeySummary } from '../../src/kms/inventory.ts';
import { runJanitor } from '../../src/kms/janitor.ts';
import type { RewrapResult } from '../../src/kms/rewrap.ts';
import type { RotateResult } from '../../src/kms/rotation.ts';
import type { StateChange } from '../../src/kms/states.ts';
import { type TestCa, testCaTemplate } from '../support/ca.ts';
import { issueLeaf, kmsCli, restart } from './helpers.ts';

const JANITOR = {};

// One CA per file; each case works on a copy of it (testCaTemplate).
let template: Awaited<ReturnType<typeof testCaTemplate>>;
beforeAll(async () => {
  template = await testCaTemplate();
});
afterAll(async () => template?.close());

describe('kms lifecycle', () => {
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
  const reopen = async () => {
    ctx = await restart(ctx, ca.configFile, ca.env);
    return ctx;
  };
  const intermediateKey = async () => (await ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.key_id!;

  it('lists and shows every key with state, algorithm, dates and use counts', async () => {
    await issueLeaf(ctx);
    const list = await kmsCli<KeySummary[]>(ctx, ['kms', 'list']);
    expect(list.map((k) => k.kind).sort()).toEqual(['kek', 'kek', 'key', 'key', 'root-of-trust']);
    expect(list.find((k) => k.name === 'audit-chain')).toMatchObject({ kind: 'kek', state: 'Enabled' });
    const kek = list.find((k) => k.name === 'ca-keys')!;
    expect(kek).toMatchObject({ name: 'ca-keys', state: 'Enabled', algorithm: 'aes-256', rotated: null });
    expect(kek.versions).toEqual([
      expect.objectContaining({ version: 1, primary: true, state: 'Enabled', wrappedDeks: 2 }),
    ]);
    const inter = list.find((k) => k.name === 'intermediate')!;
    expect(inter).toMatchObject({ state: 'Enabled', algorithm: 'ecdsa-p256' });
    expect(inter.uses).toBeGreaterThanOrEqual(1);
    const shown = await kmsCli<KeyDetail>(ctx, ['kms', 'show'], {}, [inter.id]);
    expect(shown.policy?.statements[0]?.actions).toContain('sign-certificate');
    expect(shown.auditEvents).toBeGreaterThan(0);
    const v1 = await kmsCli<KeyDetail>(ctx, ['kms', 'show'], {}, ['ca-keys/v1']);
    expect(v1.purpose).toBe('ca-keys');
  });

  it('rotates, then rewraps while issuing; nothing fails, a restart loses nothing, old versions end unused', async () => {
    // Many DEKs under version 1, so the rewrap has batches to interleave with issuance.
    for (let i = 0; i < 30; i++)
      await ctx.kms.createKey(ctx.database.db, { usage: 'provisioner', alg: 'ecdsa-p256', principal: 'test' });
    const rotated = await kmsCli<RotateResult>(ctx, ['kms', 'rotate'], {}, []);
    expect(rotated).toMatchObject({ name: 'ca-keys', previousVersion: 1, version: 2 });
    await issueLeaf(ctx);
    ctx = await reopen();
    // Older version still unwraps after a restart (nothing cached).
    await issueLeaf(ctx);
    let stop = false;
    let issued = 0;
    const issuing = (async () => {
      while (!stop) {
        await issueLeaf(ctx, `n${issued}.internal`);
        issued++;
      }
    })();
    const progress: number[] = [];
    const { rewrap } = await import('../../src/kms/rewrap.ts');
    const result: RewrapResult = await rewrap(ctx.kms, ctx.database.db, {
      principal: 'test',
      batchSize: 5,
      onProgress: (p) => progress.push(p.done),
    });
    stop = true;
    await issuing;
    expect(issued).toBeGreaterThan(0);
    expect(result.rewrapped).toBe(32);
    expect(result.unusedVersions).toEqual([1]);
    expect(progress.at(-1)).toBe(32);
    const rows = await ctx.database.db.selectFrom('kms_keys').select('kek_version').execute();
    expect(new Set(rows.map((r) => r.kek_version))).toEqual(new Set([2]));
    // Resumable: a second run finds nothing to do.
    expect((await kmsCli<RewrapResult>(ctx, ['kms', 'rewrap'], {}, [])).rewrapped).toBe(0);
    // With version 1 disabled, a fresh process still signs: every DEK is under version 2.
    await kmsCli<StateChange>(ctx, ['kms', 'disable'], {}, ['ca-keys/v1']);
    ctx = await reopen();
    await issueLeaf(ctx);
    const audit = await ctx.database.db
      .selectFrom('audit_events')
      .select('action')
      .where('action', 'in', ['rotate', 'rewrap'])
      .execute();
    expect(audit.filter((a) => a.action === 'rewrap').length).toBeGreaterThanOrEqual(7);
  });

  it('a disabled key cannot sign: issue fails naming the key; enable restores it', async () => {
    const keyId = await intermediateKey();
    await issueLeaf(ctx);
    await kmsCli<StateChange>(ctx, ['kms', 'disable'], {}, [keyId]);
    await expect(issueLeaf(ctx)).rejects.toThrow(
      new RegExp(`key ${keyId} \\(intermediate\\) is Disabled and cannot sign`),
    );
    const denied = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('key_id', '=', keyId)
      .where('outcome', '=', 'denied')
      .execute();
    expect(denied).toEqual([expect.objectContaining({ action: 'sign-certificate', error_code: 'KeyDisabled' })]);
    // A restart doesn't re-enable it.
    await reopen();
    await expect(issueLeaf(ctx)).rejects.toThrow(keyId);
    await kmsCli(ctx, ['kms', 'enable'], {}, [keyId]);
    await issueLeaf(ctx);
  });

  it('a disable applies at once on another replica that has the key cached', async () => {
    // A second replica: its own key hierarchy and CA (own caches) on the same database.
    const { openKeyHierarchy } = await import('../../src/kms/index.ts');
    const { rootOfTrustOptions } = await import('../../src/context.ts');
    const { CertificateAuthority } = await import('../../src/ca/authority.ts');
    const kms2 = await openKeyHierarchy(ctx.database.db, rootOfTrustOptions(ctx.config), 'replica-2');
    const other = {
      ...ctx,
      kms: kms2,
      ca: new CertificateAuthority(ctx.database.db, kms2, ctx.config.profiles),
    } as AppContext;
    const keyId = await intermediateKey();
    await issueLeaf(other);
    await kmsCli<StateChange>(ctx, ['kms', 'disable'], {}, [keyId]);
    await expect(issueLeaf(other)).rejects.toThrow(new RegExp(`key ${keyId} \\(intermediate\\) is Disabled`));
    await kmsCli(ctx, ['kms', 'enable'], {}, [keyId]);
    await issueLeaf(other);
  });

  it('deletion windows: refuses < 7 days, refuses keys still needed unless --force (listing them), cancel → Disabled', async () => {
    const keyId = await intermediateKey();
    await expect(kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '6' }, [keyId])).rejects.toThrow(
      /--days must be a whole number from 7 to 30/,
    );
    await expect(kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '31' }, [keyId])).rejects.toThrow(/--days/);
    await issueLeaf(ctx);
    await expect(kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '7' }, [keyId])).rejects.toThrow(
      /still needed[\s\S]*unexpired certificate\(s\) issued by CA/,
    );
    await expect(kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '7' }, ['ca-keys/v1'])).rejects.toThrow(
      /is wrapped by version 1[\s\S]*primary version/,
    );
    const forced = await kmsCli<StateChange>(ctx, ['kms', 'schedule-deletion'], { days: '7', force: true }, [keyId]);
    expect(forced.state).toBe('PendingDeletion');
    expect(forced.unrecoverable.join('\n')).toMatch(/unexpired certificate/);
    const due = await sql<{
      days: number;
    }>`SELECT round(extract(epoch FROM deletion_at - now()) / 86400)::int AS days FROM kms_keys WHERE id = ${keyId}`.execute(
      ctx.database.db,
    );
    expect(due.rows[0]!.days).toBe(7);
    await expect(issueLeaf(ctx)).rejects.toThrow(/PendingDeletion/);
    // The janitor leaves it alone inside the window; cancel makes it Disabled, not Enabled.
    expect((await runJanitor(ctx.kms, ctx.database.db, JANITOR)).destroyed.keys).toEqual([]);
    const cancelled = await kmsCli<StateChange>(ctx, ['kms', 'cancel-deletion'], {}, [keyId]);
    expect(cancelled).toMatchObject({ state: 'Disabled', previousState: 'PendingDeletion', deletionAt: null });
    await kmsCli(ctx, ['kms', 'enable'], {}, [keyId]);
    await issueLeaf(ctx);
  });

  it('after the window the janitor destroys the material, and a restart cannot bring it back', async () => {
    const spare = await ctx.kms.createKey(ctx.database.db, {
      usage: 'provisioner',
      alg: 'ecdsa-p256',
      principal: 'test',
    });
    await kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '30' }, [spare.id]);
    await sql`UPDATE kms_keys SET deletion_at = now() - interval '1 second' WHERE id = ${spare.id}`.execute(
      ctx.database.db,
    );
    const report = await runJanitor(ctx.kms, ctx.database.db, JANITOR);
    expect(report.destroyed.keys).toEqual([spare.id]);
    ctx = await reopen();
    const row = await ctx.database.db
      .selectFrom('kms_keys')
      .selectAll()
      .where('id', '=', spare.id)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'Destroyed', dek_wrapped: null, key_ciphertext: null });
    await expect(ctx.kms.publicKey(spare.id)).rejects.toThrow(/Destroyed/);
    await expect(kmsCli(ctx, ['kms', 'enable'], {}, [spare.id])).rejects.toThrow(/is Destroyed/);
    const destroyed = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('action', '=', 'destroy')
      .where('key_id', '=', spare.id)
      .execute();
    expect(destroyed[0]!.principal).toBe('keyward:janitor');
  });

  it('automatic rotation rotates a KEK whose primary is older than the period', async () => {
    await kmsCli(ctx, ['kms', 'rotate'], { 'auto-days': '30' }, ['ca-keys']);
    expect((await runJanitor(ctx.kms, ctx.database.db, JANITOR)).rotated).toEqual([]);
    await sql`UPDATE kms_kek_versions SET created_at = now() - interval '31 days'`.execute(ctx.database.db);
    const report = await runJanitor(ctx.kms, ctx.database.db, JANITOR);
    expect(report.rotated.map((r) => r.version)).toEqual([2]);
    await issueLeaf(ctx);
  });

  it('policies: default deny for others, explicit deny wins, refusals are audited', async () => {
    const keyId = await intermediateKey();
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const file = join(ca.store.dataDir, 'policy.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        statements: [
          { effect: 'allow', principals: ['*'], actions: ['sign-certificate', 'sign-crl', 'unwrap'] },
          {
            sid: 'no-tls-server',
            effect: 'deny',
            principals: ['keyward'],
            actions: ['sign-certificate'],
            conditions: { profile: ['tls-server'] },
          },
        ],
      }),
    );
    await kmsCli(ctx, ['kms', 'put-policy'], { file }, [keyId]);
    await expect(issueLeaf(ctx)).rejects.toThrow(/explicit deny \(no-tls-server\) refuses sign-certificate to keyward/);
    const denied = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('key_id', '=', keyId)
      .where('outcome', '=', 'denied')
      .execute();
    expect(denied.at(-1)).toMatchObject({
      action: 'sign-certificate',
      principal: 'keyward',
      error_code: 'AccessDenied',
    });
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        statements: [{ effect: 'allow', principals: ['someone-else'], actions: ['sign-certificate'] }],
      }),
    );
    await kmsCli(ctx, ['kms', 'put-policy'], { file }, [keyId]);
    await expect(issueLeaf(ctx)).rejects.toThrow(/no statement allows sign-certificate to keyward/);
    writeFileSync(
      file,
      JSON.stringify({ version: 1, statements: [{ effect: 'allow', principals: ['*'], actions: ['fly'] }] }),
    );
    await expect(kmsCli(ctx, ['kms', 'put-policy'], { file }, [keyId])).rejects.toThrow(
      /invalid policy at statements.0.actions.0/,
    );
  });
});
