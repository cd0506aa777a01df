import { randomBytes } from 'node:crypto';

import { sql } from 'kysely';

import type { Db, Executor } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { insertPrimaryKekVersion } from './hierarchy-rows.ts';
import { resolveKey } from './refs.ts';

export interface RotateResult {
  kekId: string;
  name: string;
  previousVersion: number;
  version: number;
}

/**
 * Adds version n+1 to a KEK and makes it primary. Older versions stay Enabled, so
 * everything they wrap still unwraps; `kms rewrap` moves DEKs later. The advisory lock serialises
 * rotations of one KEK across replicas.
 */
export async function rotateKek(
  kms: KeyHierarchy,
  db: Db,
  kekRef: string,
  principal: string,
  reason = 'manual',
): Promise<RotateResult> {
  const ref = await resolveKey(db, kekRef);
  if (ref.kind !== 'kek')
    throw new KmsError(
      'InvalidInput',
      `kms rotate takes a KEK name (e.g. ca-keys), not ${ref.kind === 'kek-version' ? 'a version' : `a ${ref.kind}`}`,
    );
  const material = randomBytes(32);
  try {
    const result = await db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${'kek:' + ref.id}))`.execute(trx);
      const kek = await trx
        .selectFrom('kms_keks')
        .select(['state', 'purpose'])
        .where('id', '=', ref.id)
        .executeTakeFirstOrThrow();
      // Events name no key version, so a new chain key would make older events unverifiable.
      if (kek.purpose === 'audit')
        throw new KmsError(
          'InvalidInput',
          `KEK ${ref.name} keys the audit chain and is not rotated (kms rotate-root re-wraps it)`,
        );
      if (kek.state !== 'Enabled')
        throw new KmsError('InvalidState', `KEK ${ref.name} is ${kek.state}; only an Enabled KEK can rotate`);
      const top = await trx
        .selectFrom('kms_kek_versions')
        .select((eb) => [eb.fn.max('version').as('max')])
        .where('kek_id', '=', ref.id)
        .executeTakeFirstOrThrow();
      const primary = await trx
        .selectFrom('kms_kek_versions')
        .select('version')
        .where('kek_id', '=', ref.id)
        .where('is_primary', '=', true)
        .executeTakeFirst();
      const version = Number(top.max) + 1;
      const wrapped = await kms.wrapKekMaterial(material, ref.id, version);
      await trx
        .updateTable('kms_kek_versions')
        .set({ is_primary: false })
        .where('kek_id', '=', ref.id)
        .where('is_primary', '=', true)
        .execute();
      await insertPrimaryKekVersion(trx, { kekId: ref.id, version, rootId: kms.rootId, wrapped });
      await kms.audit.append(trx, {
        principal,
        action: 'rotate',
        keyId: ref.id,
        keyVersion: version,
        outcome: 'success',
        context: { name: ref.name, previous_version: primary?.version ?? null, reason },
      });
      return { kekId: ref.id, name: ref.name, previousVersion: primary?.version ?? 0, version };
    });
    kms.cacheKek(ref.id, result.version, material);
    return result;
  } finally {
    material.fill(0);
  }
}

/**
 * Automatic rotation: rotates every Enabled KEK whose primary version is older than its own
 * auto_rotate_days, or the configured default. Ages come from the database clock.
 */
export async function autoRotate(kms: KeyHierarchy, db: Db, defaultDays: number | undefined): Promise<RotateResult[]> {
  const due = await sql<{ name: string }>`
    SELECT k.name FROM kms_keks k JOIN kms_kek_versions v ON v.kek_id = k.id AND v.is_primary
    WHERE k.state = 'Enabled' AND k.purpose <> 'audit' AND coalesce(k.auto_rotate_days, ${defaultDays ?? null}::int) IS NOT NULL
      AND v.created_at + make_interval(days => coalesce(k.auto_rotate_days, ${defaultDays ?? null}::int)) <= now()`.execute(
    db,
  );
  const out: RotateResult[] = [];
  for (const row of due.rows) out.push(await rotateKek(kms, db, row.name, 'keyward:auto-rotate', 'auto'));
  return out;
}

export async function setAutoRotate(
  kms: KeyHierarchy,
  db: Executor,
  kekRef: string,
  days: number | null,
  principal: string,
): Promise<void> {
  const ref = await resolveKey(db, kekRef);
  if (ref.kind !== 'kek') throw new KmsError('InvalidInput', 'automatic rotation is set per KEK');
  if (days !== null && (!Number.isInteger(days) || days < 1))
    throw new KmsError('InvalidInput', '--auto-days must be a positive whole number');
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('kms_keks').set({ auto_rotate_days: days }).where('id', '=', ref.id).execute();
    await kms.audit.append(trx, {
      principal,
      action: 'set-auto-rotate',
      keyId: ref.id,
      outcome: 'success',
      context: { days },
    });
  });
}
