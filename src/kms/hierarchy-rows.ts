import type { Executor } from '../db/schema.ts';
import type { RootRecord } from './roots/types.ts';

// The rows that make up the hierarchy, inserted the same way when it is created and when it is
// rotated, so a new root or KEK version never differs by where it was made.

/** A root of trust's row; `Pending` while `kms rotate-root` moves the KEKs to it. */
export async function insertRoot(trx: Executor, record: RootRecord, state: 'Enabled' | 'Pending'): Promise<void> {
  await trx
    .insertInto('kms_roots')
    .values({
      id: record.id,
      provider: record.provider,
      params: JSON.stringify(record.params),
      kcv: record.kcv,
      state,
      retired_at: null,
    })
    .execute();
}

/** A KEK version wrapped under `rootId`, made primary (the caller demotes the previous one). */
export async function insertPrimaryKekVersion(
  trx: Executor,
  v: { kekId: string; version: number; rootId: string; wrapped: Uint8Array },
): Promise<void> {
  await trx
    .insertInto('kms_kek_versions')
    .values({
      kek_id: v.kekId,
      version: v.version,
      is_primary: true,
      root_id: v.rootId,
      wrapped: v.wrapped,
      next_root_id: null,
      next_wrapped: null,
      last_used_at: null,
      deletion_at: null,
      destroyed_at: null,
    })
    .execute();
}
