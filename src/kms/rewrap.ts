import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { open, PURPOSE, seal } from './container.ts';
import { KmsError } from './errors.ts';
import { dekContext, type KeyHierarchy } from './hierarchy.ts';
import { resolveKey } from './refs.ts';

export interface RewrapProgress {
  done: number;
  total: number;
}

export interface RewrapResult {
  kekId: string;
  name: string;
  primaryVersion: number;
  rewrapped: number;
  /** Versions that now wrap no live DEK (candidates to disable or delete). */
  unusedVersions: number[];
}

/**
 * Moves every DEK of a KEK to its primary version. Each batch is one transaction
 * that locks its rows with SKIP LOCKED, so two runs share the work, a crash loses at most one
 * uncommitted batch, and a restart simply continues with the rows still on old versions. The CA key
 * ciphertexts are never touched and every row stays decryptable throughout, so serving continues.
 */
export async function rewrap(
  kms: KeyHierarchy,
  db: Db,
  opts: { kek?: string; principal: string; batchSize?: number; onProgress?: (p: RewrapProgress) => void },
): Promise<RewrapResult> {
  const ref = await resolveKey(db, opts.kek ?? 'ca-keys');
  if (ref.kind === 'key') {
    const key = await db.selectFrom('kms_keys').select('backend').where('id', '=', ref.id).executeTakeFirstOrThrow();
    if (key.backend === 'hsm')
      throw new KmsError(
        'InvalidInput',
        `key ${ref.id} is an HSM key: its private key never leaves the token, so there is no DEK to rewrap (kms rewrap takes a KEK name)`,
      );
  }
  if (ref.kind !== 'kek') throw new KmsError('InvalidInput', 'kms rewrap takes a KEK name');
  const batchSize = opts.batchSize ?? 500;
  const primaryOf = async () => {
    const p = await db
      .selectFrom('kms_kek_versions')
      .select('version')
      .where('kek_id', '=', ref.id)
      .where('is_primary', '=', true)
      .executeTakeFirstOrThrow();
    return p.version;
  };
  const remaining = async (primary: number) =>
    Number(
      (
        await db
          .selectFrom('kms_keys')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('kek_id', '=', ref.id)
          .where('kek_version', '<', primary)
          .where('dek_wrapped', 'is not', null)
          .executeTakeFirstOrThrow()
      ).n,
    );
  let primary = await primaryOf();
  const total = await remaining(primary);
  let done = 0;
  opts.onProgress?.({ done, total });
  for (;;) {
    // Re-read the primary each batch: a rotation during rewrap retargets the rest.
    primary = await primaryOf();
    const target = await kms.primaryKek(db, ref.name);
    const moved = await db.transaction().execute(async (trx) => {
      const rows = await sql<{ id: string; usage: string; kek_version: number; dek_wrapped: Uint8Array }>`
        SELECT id, usage, kek_version, dek_wrapped FROM kms_keys
        WHERE kek_id = ${ref.id} AND kek_version < ${primary} AND dek_wrapped IS NOT NULL
        ORDER BY id LIMIT ${batchSize} FOR UPDATE SKIP LOCKED`.execute(trx);
      const updates: { id: string; wrapped: Buffer }[] = [];
      for (const row of rows.rows) {
        const old = await kms.kek(ref.id, row.kek_version, trx);
        const ctx = dekContext(row.id, row.usage);
        const dek = open(old, row.dek_wrapped, { purpose: PURPOSE.dek, keyId: ref.id, version: row.kek_version }, ctx);
        try {
          const wrapped = seal(target.key, { purpose: PURPOSE.dek, keyId: ref.id, version: target.version }, ctx, dek);
          // Checked before it replaces the old blob: the new one must open with the same DEK.
          const check = open(
            target.key,
            wrapped,
            { purpose: PURPOSE.dek, keyId: ref.id, version: target.version },
            ctx,
          );
          if (!check.equals(dek)) throw new KmsError('InvalidCiphertext', `rewrap of key ${row.id} did not round-trip`);
          check.fill(0);
          updates.push({ id: row.id, wrapped });
        } finally {
          dek.fill(0);
        }
      }
      if (updates.length > 0) {
        // One statement per batch: the rows are locked already, and a round trip per row dominated.
        const values = sql.join(updates.map((u) => sql`(${u.id}::uuid, ${u.wrapped}::bytea)`));
        await sql`UPDATE kms_keys AS k SET dek_wrapped = v.w, kek_version = ${target.version}
          FROM (VALUES ${values}) AS v(id, w) WHERE k.id = v.id`.execute(trx);
      }
      if (rows.rows.length > 0) {
        await kms.audit.append(trx, {
          principal: opts.principal,
          action: 'rewrap',
          keyId: ref.id,
          keyVersion: target.version,
          outcome: 'success',
          context: {
            count: rows.rows.length,
            keys:
              rows.rows.length <= 50
                ? rows.rows.map((r) => r.id).join(',')
                : `${rows.rows[0]!.id}..${rows.rows.at(-1)!.id}`,
          },
        });
      }
      return rows.rows.length;
    });
    done += moved;
    opts.onProgress?.({ done, total: Math.max(total, done) });
    if (moved === 0) {
      // Rows skipped because another rewrap holds them are not ours to wait for, but report truly.
      if ((await remaining(primary)) === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const versions = await sql<{ version: number; n: number }>`
    SELECT v.version, (SELECT count(*) FROM kms_keys k WHERE k.kek_id = v.kek_id AND k.kek_version = v.version AND k.state <> 'Destroyed')::int AS n
    FROM kms_kek_versions v WHERE v.kek_id = ${ref.id} AND NOT v.is_primary ORDER BY v.version`.execute(db);
  return {
    kekId: ref.id,
    name: ref.name,
    primaryVersion: primary,
    rewrapped: done,
    unusedVersions: versions.rows.filter((v) => Number(v.n) === 0).map((v) => v.version),
  };
}
