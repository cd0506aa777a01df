import { randomUUID } from 'node:crypto';

import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { insertRoot } from './hierarchy-rows.ts';
import { type AwsKmsParams, createAwsKmsRoot, loadAwsKmsRoot } from './roots/awskms.ts';
import { createFileRoot, loadFileRoot } from './roots/file.ts';
import { createPassphraseRoot, loadPassphraseRoot } from './roots/passphrase.ts';
import { createPkcs11Root, loadPkcs11Root, type Pkcs11Params } from './roots/pkcs11.ts';
import { createSharesRoot } from './roots/shares.ts';
import type { RootOfTrust, RootRecord } from './roots/types.ts';
import { type DeliveredShares, deliverShares, type ShareDelivery } from './share-files.ts';

export type NewRootOptions =
  | { type: 'file'; path: string }
  | { type: 'passphrase'; passphrase: string }
  | { type: 'pkcs11'; params: Pkcs11Params }
  | { type: 'awskms'; params: AwsKmsParams }
  | { type: 'shares'; threshold: number; count: number; delivery: ShareDelivery };

export interface RotateRootResult {
  previousRootId: string;
  rootId: string;
  provider: RootOfTrust['provider'];
  /** KEK versions re-wrapped by this run (a resumed run counts only the rest). */
  rewrapped: number;
  kekVersions: number;
  /** Moving to a shares root: where its shares went (or the shares, to show once). */
  shares?: DeliveredShares;
}

function loadRoot(
  record: RootRecord,
  opts: Exclude<NewRootOptions, { type: 'shares' }>,
): RootOfTrust | Promise<RootOfTrust> {
  if (opts.type === 'file') return loadFileRoot(record, opts.path);
  if (opts.type === 'passphrase') return loadPassphraseRoot(record, opts.passphrase);
  if (opts.type === 'awskms') return loadAwsKmsRoot(record);
  return loadPkcs11Root(record);
}

function createRoot(
  id: string,
  opts: NewRootOptions,
):
  | { root: RootOfTrust; record: RootRecord; shares?: string[] }
  | Promise<{ root: RootOfTrust; record: RootRecord; shares?: string[] }> {
  if (opts.type === 'file') return createFileRoot(id, opts.path);
  if (opts.type === 'shares') return createSharesRoot(id, opts.threshold, opts.count);
  if (opts.type === 'passphrase') return createPassphraseRoot(id, opts.passphrase);
  if (opts.type === 'awskms') return createAwsKmsRoot(id, opts.params);
  return createPkcs11Root(id, opts.params);
}

/**
 * Moves every KEK version to a new root of trust. Each version is re-wrapped into
 * next_root_id/next_wrapped in its own transaction, so a crash leaves both blobs valid and a
 * second run resumes with the rest; one final transaction swaps the columns and retires the old
 * root. The pending root is found again by provider, so resuming needs the same target options.
 */
export async function rotateRoot(
  kms: KeyHierarchy,
  db: Db,
  opts: NewRootOptions,
  principal: string,
  onProgress?: (p: { done: number; total: number }) => void,
): Promise<RotateRootResult> {
  const old = kms.rootOfTrust;
  const pending = await db.selectFrom('kms_roots').selectAll().where('state', '=', 'Pending').execute();
  let target: RootOfTrust | undefined;
  let newShares: string[] | undefined;
  for (const p of pending) {
    // A pending shares root can't be resumed: its key lived only in the process that made it.
    if (p.provider === opts.type && opts.type !== 'shares' && !target) {
      target = await loadRoot({ id: p.id, provider: p.provider, params: p.params, kcv: p.kcv }, opts);
    } else {
      // An abandoned attempt towards another root: forget its half-written blobs.
      await db
        .updateTable('kms_kek_versions')
        .set({ next_root_id: null, next_wrapped: null })
        .where('next_root_id', '=', p.id)
        .execute();
      await db.deleteFrom('kms_roots').where('id', '=', p.id).execute();
    }
  }
  if (!target) {
    const created = await createRoot(randomUUID(), opts);
    target = created.root;
    newShares = created.shares;
    await db.transaction().execute(async (trx) => {
      await insertRoot(trx, created.record, 'Pending');
      await kms.audit.append(trx, {
        principal,
        action: 'rotate-root-begin',
        keyId: created.record.id,
        outcome: 'success',
        context: { from: old.id, provider: created.record.provider },
      });
    });
  }
  const newRoot = target;
  if (newRoot.id === old.id) throw new KmsError('InvalidInput', 'the new root is the current root');

  const todo = await db
    .selectFrom('kms_kek_versions')
    .select(['kek_id', 'version', 'wrapped'])
    .where('root_id', '=', old.id)
    .where('state', '<>', 'Destroyed')
    .where((eb) => eb.or([eb('next_root_id', 'is', null), eb('next_root_id', '<>', newRoot.id)]))
    .orderBy('kek_id')
    .orderBy('version')
    .execute();
  const total = Number(
    (
      await db
        .selectFrom('kms_kek_versions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('root_id', '=', old.id)
        .where('state', '<>', 'Destroyed')
        .executeTakeFirstOrThrow()
    ).n,
  );
  let done = total - todo.length;
  onProgress?.({ done, total });
  for (const row of todo) {
    const ref = { kekId: row.kek_id, version: row.version, installId: kms.installation };
    const material = await old.unwrapKek(row.wrapped, ref);
    try {
      const wrapped = await newRoot.wrapKek(material, ref);
      const check = await newRoot.unwrapKek(wrapped, ref);
      if (!check.equals(material))
        throw new KmsError(
          'InvalidCiphertext',
          `KEK ${row.kek_id} v${row.version} did not round-trip through the new root`,
        );
      check.fill(0);
      await db
        .updateTable('kms_kek_versions')
        .set({ next_root_id: newRoot.id, next_wrapped: wrapped })
        .where('kek_id', '=', row.kek_id)
        .where('version', '=', row.version)
        .where('root_id', '=', old.id)
        .execute();
    } finally {
      material.fill(0);
    }
    done++;
    onProgress?.({ done, total });
  }

  const shares = await db.transaction().execute(async (trx) => {
    const left = await trx
      .selectFrom('kms_kek_versions')
      .select(['kek_id', 'version'])
      .where('root_id', '=', old.id)
      .where('state', '<>', 'Destroyed')
      .where((eb) => eb.or([eb('next_root_id', 'is', null), eb('next_root_id', '<>', newRoot.id)]))
      .forUpdate()
      .execute();
    if (left.length > 0)
      throw new KmsError('InvalidState', `${left.length} KEK version(s) appeared during rotate-root; run it again`);
    await trx
      .updateTable('kms_kek_versions')
      .set((eb) => ({
        root_id: eb.ref('next_root_id') as never,
        wrapped: eb.ref('next_wrapped') as never,
        next_root_id: null,
        next_wrapped: null,
      }))
      .where('next_root_id', '=', newRoot.id)
      .execute();
    await trx
      .updateTable('kms_roots')
      .set({ state: 'Retired', retired_at: sql<Date>`now()` } as never)
      .where('id', '=', old.id)
      .execute();
    await trx
      .updateTable('kms_roots')
      .set({ state: 'Enabled' } as never)
      .where('id', '=', newRoot.id)
      .execute();
    await kms.audit.append(trx, {
      principal,
      action: 'rotate-root',
      keyId: newRoot.id,
      outcome: 'success',
      context: { from: old.id, provider: newRoot.provider, kek_versions: total },
    });
    // Handed out before the switch commits: a crash can't leave a root whose shares nobody got.
    if (opts.type === 'shares' && newShares) {
      const setId = (
        await trx.selectFrom('kms_roots').select('params').where('id', '=', newRoot.id).executeTakeFirstOrThrow()
      ).params as { setId: string };
      return deliverShares(
        { threshold: opts.threshold, count: opts.count, setId: setId.setId, shares: newShares },
        opts.delivery,
      );
    }
    return undefined;
  });
  kms.useRoot(newRoot);
  return {
    previousRootId: old.id,
    rootId: newRoot.id,
    provider: newRoot.provider,
    rewrapped: todo.length,
    kekVersions: total,
    ...(shares ? { shares } : {}),
  };
}
