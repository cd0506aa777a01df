import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

import { initCommand, type InitOutput } from '../../src/cli/ca-commands.ts';
import { loadConfig } from '../../src/config/load.ts';
import { type AppContext, openContext } from '../../src/context.ts';
import { openKeyHierarchy } from '../../src/kms/index.ts';
import { rekeyShares } from '../../src/kms/rekey-shares.ts';
import { parseShare, splitRootKey } from '../../src/kms/roots/shares.ts';
import { decryptShare } from '../../src/kms/share-files.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { tempDir } from '../support/openssl.ts';
import { issueLeaf } from './helpers.ts';

const SHARES = { type: 'shares', threshold: 3, shares: 5 };

/** A store whose configuration names a 3-of-5 shares root, and `keyward init` run on it. */
async function initShares(store: TestStore, delivery: { dir?: string; holderKeys?: string[] } = {}) {
  const configFile = join(store.dataDir, 'keyward.yaml');
  writeFileSync(
    configFile,
    stringify({
      rootOfTrust: SHARES,
      log: { level: 'silent' },
      profilesDir: join(process.cwd(), 'ca-config', 'profiles'),
    }),
  );
  const config = loadConfig({ configFile, dataDir: store.dataDir, env: { ...store.env } });
  const ctx = await openContext(config, { principal: 'test' });
  const out = (await initCommand.run(ctx, { principal: 'cli:test', delivery } as never)) as InitOutput;
  return { config, ctx, out };
}

const combinations = <T>(items: T[], k: number): T[][] =>
  k === 0 ? [[]] : items.flatMap((x, i) => combinations(items.slice(i + 1), k - 1).map((rest) => [x, ...rest]));

/** Changes one character of a share's data without touching its checksum. */
function mistype(share: string): string {
  const parts = share.split(':');
  const data = parts[5]!;
  parts[5] = (data[0] === 'A' ? 'B' : 'A') + data.slice(1);
  return parts.join(':');
}

describe('Shamir shares (GF(256))', () => {
  it('splits a key so that any M of N rebuild it and fewer do not; shares carry their set, index and a checksum', async () => {
    const { combine } = await import('shamir-secret-sharing');
    const key = new Uint8Array(32).map((_, i) => i * 7 + 1);
    const set = await splitRootKey(key, 3, 5);
    const parsed = set.shares.map(parseShare);
    expect(parsed.map((p) => [p.index, p.count, p.threshold, p.setId])).toEqual(
      [1, 2, 3, 4, 5].map((i) => [i, 5, 3, set.params.setId]),
    );
    for (const trio of combinations(parsed, 3)) expect(await combine(trio.map((p) => p.bytes))).toEqual(key);
    for (const pair of combinations(parsed, 2)) expect(await combine(pair.map((p) => p.bytes))).not.toEqual(key);
    expect(() => parseShare(mistype(set.shares[1]!))).toThrow(/share 2 of 5 is corrupt: its checksum does not match/);
    expect(() => parseShare('hello')).toThrow(/not a Keyward share/);
    await expect(splitRootKey(key, 1, 5)).rejects.toThrow(/2 ≤ threshold ≤ shares/);
  });
});

describe('a 3-of-5 shares root of trust', () => {
  let store: TestStore;
  let ctx: AppContext;
  let shares: string[];
  let options: { type: 'shares'; threshold: number; count: number };
  beforeAll(async () => {
    store = await createTestStore();
    const made = await initShares(store);
    ctx = made.ctx;
    shares = made.out.shares!.shares!;
    options = { type: 'shares', threshold: 3, count: 5 };
    expect(made.out.created).toBe(true);
    await issueLeaf(ctx);
  });
  afterAll(async () => {
    await ctx?.close();
    await store?.cleanup();
  });

  /** A new process's view: the same database, the root sealed. */
  const sealedHierarchy = () => openKeyHierarchy(ctx.database.db, options, 'test');
  const intermediateKey = async () =>
    (
      await ctx.database.db
        .selectFrom('issuers')
        .select('key_id')
        .where('kind', '=', 'intermediate')
        .executeTakeFirstOrThrow()
    ).key_id!;

  it('init shows each share once and stores none of them; the database has digests only', async () => {
    expect(shares).toHaveLength(5);
    const root = await ctx.database.db
      .selectFrom('kms_roots')
      .selectAll()
      .where('provider', '=', 'shares')
      .executeTakeFirstOrThrow();
    const stored = JSON.stringify(root.params);
    for (const s of shares) expect(stored).not.toContain(s.split(':')[5]);
    expect(root.params).toMatchObject({ threshold: 3, count: 5, digests: expect.any(Array) });
  });

  it('any 3 of the 5 shares unseal; with 2 it stays sealed and signs nothing', async () => {
    const keyId = await intermediateKey();
    for (const trio of combinations([0, 1, 2, 3, 4], 3)) {
      const kms = await sealedHierarchy();
      expect(kms.sealed).toBe(true);
      await kms.unseal(shares[trio[0]!]!, 'cli:alice');
      const two = await kms.unseal(shares[trio[1]!]!, 'cli:bob');
      expect(two).toMatchObject({ sealed: true, entered: [trio[0]! + 1, trio[1]! + 1].sort(), threshold: 3 });
      await expect(kms.signer(keyId, 'sign-certificate', 'test')).rejects.toThrow(/the CA is sealed/);
      const done = await kms.unseal(shares[trio[2]!]!, 'admin:carol');
      expect(done.sealed).toBe(false);
      const signer = await kms.signer(keyId, 'sign-certificate', 'test');
      expect((await signer.sign(new Uint8Array(8))).length).toBeGreaterThan(60);
    }
    const events = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('action', '=', 'unseal')
      .execute();
    expect(events).toHaveLength(10);
    expect(events[0]!.context).toMatchObject({ shares: '1,2,3', principals: 'cli:alice,cli:bob,admin:carol' });
  });

  it('refuses a corrupt, altered, repeated or foreign share by name and keeps what was entered', async () => {
    const kms = await sealedHierarchy();
    await kms.unseal(shares[0]!, 'cli:alice');
    await expect(kms.unseal(mistype(shares[1]!), 'cli:bob')).rejects.toThrow(
      /share 2 of 5 is corrupt: its checksum does not match/,
    );
    // An altered share whose checksum was recomputed: caught by the digest the set recorded.
    const altered = mistype(shares[1]!);
    const body = altered.slice(0, altered.lastIndexOf(':'));
    const { createHash } = await import('node:crypto');
    const forged = `${body}:${createHash('sha256').update(body).digest('hex').slice(0, 8)}`;
    await expect(kms.unseal(forged, 'cli:bob')).rejects.toThrow(/share 2 of 5 is not the share issued for set/);
    await expect(kms.unseal(shares[0]!, 'cli:alice')).rejects.toThrow(/share 1 of 5 was already entered/);
    const other = await splitRootKey(new Uint8Array(32), 3, 5);
    await expect(kms.unseal(other.shares[3]!, 'cli:dave')).rejects.toThrow(
      new RegExp(`share 4 of 5 belongs to share set ${other.params.setId}, not the current set`),
    );
    expect(await kms.unsealStatus()).toMatchObject({ sealed: true, entered: [1] });
    await kms.unseal(shares[1]!, 'cli:bob');
    await kms.unseal(shares[4]!, 'cli:erin');
    expect(kms.sealed).toBe(false);
  });

  it('rekey-shares needs 3 current shares, hands out a new set for the same root, and the old shares stop working', async () => {
    await expect(rekeyShares(ctx.kms, ctx.database.db, shares.slice(0, 2), {}, {}, 'cli:test')).rejects.toThrow(
      /needs 3 of the current shares \(got 2\)/,
    );
    const next = await rekeyShares(
      ctx.kms,
      ctx.database.db,
      [shares[4]!, shares[2]!, shares[0]!],
      { threshold: 2, count: 3 },
      {},
      'cli:test',
    );
    expect(next).toMatchObject({ threshold: 2, count: 3 });
    const kms = await sealedHierarchy();
    await expect(kms.unseal(shares[0]!, 'cli:alice')).rejects.toThrow(/belongs to share set .*, not the current set/);
    await kms.unseal(next.shares![2]!, 'cli:alice');
    await kms.unseal(next.shares![0]!, 'cli:bob');
    expect(kms.sealed).toBe(false);
    // The same root key: every KEK and CA key opens as before.
    await (await kms.signer(await intermediateKey(), 'sign-certificate', 'test')).sign(new Uint8Array(4));
    shares = next.shares!;
    const audit = await ctx.database.db
      .selectFrom('audit_events')
      .select('context')
      .where('action', '=', 'rekey-shares')
      .execute();
    expect(audit.map((a) => a.context)).toEqual([expect.objectContaining({ threshold: 2, shares: 3, used: '1,3,5' })]);
  });
});

describe('shares written to files, encrypted to holders', () => {
  it('each holder decrypts only their own share with their RSA key (openssl can too)', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { execFileSync } = await import('node:child_process');
    const holders = Array.from({ length: 5 }, () => generateKeyPairSync('rsa', { modulusLength: 2048 }));
    const store = await createTestStore();
    const dir = join(tempDir('kw-shares-'), 'out');
    const made = await initShares(store, {
      dir,
      holderKeys: holders.map((h) => h.publicKey.export({ type: 'spki', format: 'pem' }) as string),
    });
    try {
      expect(made.out.shares).toMatchObject({ encrypted: true, files: expect.any(Array) });
      expect(made.out.shares!.shares).toBeUndefined();
      const files = made.out.shares!.files!;
      const { readFileSync, statSync } = await import('node:fs');
      expect(statSync(files[0]!).mode & 0o777).toBe(0o600);
      const keyPem = (i: number) => holders[i]!.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
      const texts = files.map((f, i) => decryptShare(readFileSync(f), keyPem(i)));
      expect(() => decryptShare(readFileSync(files[0]!), keyPem(1))).toThrow(/does not decrypt with this holder key/);
      const keyFile = join(dir, 'holder-3.key');
      writeFileSync(keyFile, keyPem(2));
      const viaOpenssl = execFileSync(
        'openssl',
        [
          'pkeyutl',
          '-decrypt',
          '-inkey',
          keyFile,
          '-in',
          files[2]!,
          '-pkeyopt',
          'rsa_padding_mode:oaep',
          '-pkeyopt',
          'rsa_oaep_md:sha256',
          '-pkeyopt',
          'rsa_mgf1_md:sha256',
        ],
        { encoding: 'utf8' },
      );
      expect(viaOpenssl.trim()).toBe(texts[2]);
      const kms = await openKeyHierarchy(made.ctx.database.db, { type: 'shares', threshold: 3, count: 5 }, 'test');
      for (const t of [texts[0]!, texts[2]!, texts[3]!]) await kms.unseal(t, 'cli:test');
      expect(kms.sealed).toBe(false);
    } finally {
      await made.ctx.close();
      await store.cleanup();
    }
  });
});
