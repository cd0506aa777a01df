import { sql } from 'kysely';

import type { Db, Executor } from '../db/schema.ts';
import { MAX_DELETION_DAYS, MIN_DELETION_DAYS } from './deletion-window.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy, StoredTokenRef } from './hierarchy.ts';
import { describeRef, type KeyRef, resolveKey } from './refs.ts';

// Key states, as in AWS KMS: Enabled ⇄ Disabled; Enabled|Disabled → PendingDeletion (7–30 days);
// PendingDeletion → Disabled (cancel); PendingDeletion → Destroyed (janitor).

export { MAX_DELETION_DAYS, MIN_DELETION_DAYS } from './deletion-window.ts';

/** Keyward can't see ciphertexts that clients hold; recent decrypts are the best evidence of use. */
const APP_DATA_RECENT_DAYS = 90;

/** Things outside kms/ that need a key (e.g. a CA with unexpired certificates); one line each. */
export type DependantCheck = (db: Executor, ref: KeyRef) => Promise<string[]>;

export interface StateChange {
  key: string;
  description: string;
  state: string;
  previousState: string;
  deletionAt: string | null;
  /** What becomes unrecoverable (only when --force overrode a refusal). */
  unrecoverable: string[];
}

interface StateRow {
  state: string;
}

async function currentState(db: Executor, ref: KeyRef, lock = false): Promise<StateRow> {
  const q =
    ref.kind === 'key'
      ? db.selectFrom('kms_keys').select('state').where('id', '=', ref.id)
      : ref.kind === 'kek'
        ? db.selectFrom('kms_keks').select('state').where('id', '=', ref.id)
        : ref.kind === 'kek-version'
          ? db
              .selectFrom('kms_kek_versions')
              .select('state')
              .where('kek_id', '=', ref.id)
              .where('version', '=', ref.version)
          : undefined;
  if (!q) throw new KmsError('InvalidInput', `${describeRef(ref)} has no key state; use kms rotate-root to replace it`);
  const row = await (lock ? q.forUpdate() : q).executeTakeFirst();
  if (!row) throw new KmsError('NotFound', `${describeRef(ref)} does not exist`);
  return row as StateRow;
}

async function writeState(db: Executor, ref: KeyRef, state: string, deletionDays: number | null): Promise<Date | null> {
  const deletionAt =
    deletionDays === null ? sql<Date | null>`NULL` : sql<Date>`now() + make_interval(days => ${deletionDays}::int)`;
  const set = { state, deletion_at: deletionAt } as never;
  const row =
    ref.kind === 'key'
      ? await db.updateTable('kms_keys').set(set).where('id', '=', ref.id).returning('deletion_at').executeTakeFirst()
      : ref.kind === 'kek'
        ? await db.updateTable('kms_keks').set(set).where('id', '=', ref.id).returning('deletion_at').executeTakeFirst()
        : await db
            .updateTable('kms_kek_versions')
            .set(set)
            .where('kek_id', '=', ref.id)
            .where('version', '=', (ref as Extract<KeyRef, { kind: 'kek-version' }>).version)
            .returning('deletion_at')
            .executeTakeFirst();
  return row?.deletion_at ? new Date(row.deletion_at) : null;
}

/** Everything inside the key hierarchy that would be lost with this key. */
export async function internalDependants(db: Executor, ref: KeyRef): Promise<string[]> {
  const out: string[] = [];
  if (ref.kind !== 'kek' && ref.kind !== 'kek-version') return out;
  const versionFilter = ref.kind === 'kek-version' ? sql`AND v.version = ${ref.version}` : sql``;
  const deks = await sql<{ id: string; usage: string; version: number }>`
    SELECT k.id, k.usage, v.version FROM kms_keys k JOIN kms_kek_versions v ON v.kek_id = k.kek_id AND v.version = k.kek_version
    WHERE v.kek_id = ${ref.id} ${versionFilter} AND k.state <> 'Destroyed' ORDER BY k.created_at`.execute(db);
  for (const d of deks.rows)
    out.push(`key ${d.id} (${d.usage}) is wrapped by version ${d.version}: it would become unrecoverable`);
  const recent = await sql<{ version: number }>`
    SELECT v.version FROM kms_kek_versions v JOIN kms_keks k ON k.id = v.kek_id
    WHERE v.kek_id = ${ref.id} ${versionFilter} AND k.purpose = 'app-data'
      AND v.last_used_at > now() - make_interval(days => ${APP_DATA_RECENT_DAYS}::int)`.execute(db);
  for (const r of recent.rows)
    out.push(
      `version ${r.version} decrypted application data within the last ${APP_DATA_RECENT_DAYS} days: ciphertexts held by clients would become undecryptable`,
    );
  if (ref.kind === 'kek-version') {
    const versions = await db
      .selectFrom('kms_kek_versions')
      .select(['version', 'state', 'is_primary'])
      .where('kek_id', '=', ref.id)
      .execute();
    const me = versions.find((v) => v.version === ref.version);
    if (me?.is_primary)
      out.push(
        `version ${ref.version} is the primary version of ${ref.name}: rotate first, or new keys can't be wrapped`,
      );
    else if (!versions.some((v) => v.version !== ref.version && v.state === 'Enabled'))
      out.push(`version ${ref.version} is the last enabled version of ${ref.name}`);
  }
  return out;
}

export class KeyStates {
  constructor(
    private readonly kms: KeyHierarchy,
    private readonly db: Db,
    /** Checks supplied by layers above kms/ (the CA knows which keys have live certificates). */
    private readonly external: DependantCheck[] = [],
  ) {}

  async dependants(ref: KeyRef): Promise<string[]> {
    const lists = await Promise.all([
      internalDependants(this.db, ref),
      ...this.external.map((check) => check(this.db, ref)),
    ]);
    return lists.flat();
  }

  async disable(key: string, principal: string, force = false): Promise<StateChange> {
    const ref = await resolveKey(this.db, key);
    const unrecoverable: string[] = [];
    if (ref.kind === 'kek-version') {
      const v = await this.db
        .selectFrom('kms_kek_versions')
        .select('is_primary')
        .where('kek_id', '=', ref.id)
        .where('version', '=', ref.version)
        .executeTakeFirstOrThrow();
      if (v.is_primary && !force)
        throw new KmsError('InUse', `${describeRef(ref)} is primary; rotate first (or pass --force)`);
    }
    return this.transition(ref, principal, 'disable', ['Enabled'], 'Disabled', null, unrecoverable);
  }

  async enable(key: string, principal: string): Promise<StateChange> {
    const ref = await resolveKey(this.db, key);
    return this.transition(ref, principal, 'enable', ['Disabled'], 'Enabled', null, []);
  }

  async scheduleDeletion(key: string, days: number, principal: string, force = false): Promise<StateChange> {
    if (!Number.isInteger(days) || days < MIN_DELETION_DAYS || days > MAX_DELETION_DAYS) {
      throw new KmsError(
        'InvalidInput',
        `--days must be a whole number from ${MIN_DELETION_DAYS} to ${MAX_DELETION_DAYS} (got ${days})`,
      );
    }
    const ref = await resolveKey(this.db, key);
    const deps = await this.dependants(ref);
    if (deps.length > 0 && !force) {
      throw new KmsError(
        'InUse',
        `${describeRef(ref)} is still needed; --force would make this unrecoverable:\n  - ${deps.join('\n  - ')}`,
      );
    }
    return this.transition(ref, principal, 'schedule-deletion', ['Enabled', 'Disabled'], 'PendingDeletion', days, deps);
  }

  async cancelDeletion(key: string, principal: string): Promise<StateChange> {
    const ref = await resolveKey(this.db, key);
    return this.transition(ref, principal, 'cancel-deletion', ['PendingDeletion'], 'Disabled', null, []);
  }

  private async transition(
    ref: KeyRef,
    principal: string,
    action: string,
    from: string[],
    to: string,
    days: number | null,
    unrecoverable: string[],
  ): Promise<StateChange> {
    const version = ref.kind === 'kek-version' ? ref.version : null;
    try {
      return await this.db.transaction().execute(async (trx) => {
        if (ref.kind === 'kek' || ref.kind === 'kek-version') {
          const kek = await trx.selectFrom('kms_keks').select('purpose').where('id', '=', ref.id).executeTakeFirst();
          if (kek?.purpose === 'audit')
            throw new KmsError(
              'InvalidInput',
              `${describeRef(ref)} keys the audit chain: without it no event could be written or verified, so its state can't change`,
            );
        }
        const { state } = await currentState(trx, ref, true);
        if (!from.includes(state)) {
          const hint =
            state === 'PendingDeletion'
              ? ' (cancel the deletion first)'
              : state === 'Destroyed'
                ? ' (its material is gone)'
                : '';
          throw new KmsError(
            'InvalidState',
            `${describeRef(ref)} is ${state}; ${action} needs ${from.join(' or ')}${hint}`,
          );
        }
        const deletionAt = await writeState(trx, ref, to, days);
        await this.kms.audit.append(trx, {
          principal,
          action,
          keyId: ref.id,
          keyVersion: version,
          outcome: 'success',
          context: {
            from: state,
            to,
            ...(days !== null ? { days, deletion_at: deletionAt!.toISOString() } : {}),
            ...(unrecoverable.length ? { forced: true, unrecoverable: unrecoverable.length } : {}),
          },
        });
        return {
          key: ref.kind === 'kek-version' ? `${ref.name}/v${ref.version}` : ref.id,
          description: describeRef(ref),
          state: to,
          previousState: state,
          deletionAt: deletionAt?.toISOString() ?? null,
          unrecoverable,
        };
      });
    } catch (err) {
      await this.kms.audit.append(this.db, {
        principal,
        action,
        keyId: ref.id,
        keyVersion: version,
        outcome: 'denied',
        errorCode: err instanceof KmsError ? err.code : 'InternalError',
        context: {},
      });
      throw err;
    }
  }

  /**
   * The deletion janitor (any replica, under a lease): destroys material whose window has passed.
   * One statement per table, audited in the same transaction; times from the database.
   */
  async destroyDue(): Promise<{ keys: string[]; keks: string[]; versions: string[] }> {
    // HSM keys are deleted from their token first; one whose token can't be reached now stays
    // PendingDeletion and is tried again on the next run.
    const inToken = await sql<{ id: string; token_ref: StoredTokenRef }>`
      SELECT id, token_ref FROM kms_keys
      WHERE backend = 'hsm' AND state = 'PendingDeletion' AND deletion_at <= now()`.execute(this.db);
    const kept: string[] = [];
    for (const k of inToken.rows) await this.kms.destroyInToken(k.token_ref).catch(() => kept.push(k.id));
    return this.db.transaction().execute(async (trx) => {
      const keys = await sql<{ id: string }>`
        UPDATE kms_keys SET state = 'Destroyed', dek_wrapped = NULL, key_ciphertext = NULL, destroyed_at = now()
        WHERE state = 'PendingDeletion' AND deletion_at <= now()
          AND NOT (id = ANY(${kept.length ? sql`ARRAY[${sql.join(kept)}]::uuid[]` : sql`ARRAY[]::uuid[]`}))
        RETURNING id`.execute(trx);
      const keks = await sql<{ id: string }>`
        UPDATE kms_keks SET state = 'Destroyed', destroyed_at = now()
        WHERE state = 'PendingDeletion' AND deletion_at <= now() RETURNING id`.execute(trx);
      const kekIds = keks.rows.map((k) => k.id);
      // A destroyed KEK takes all its versions with it; a version can also be destroyed alone.
      const versions = await sql<{ kek_id: string; version: number }>`
        UPDATE kms_kek_versions SET state = 'Destroyed', wrapped = ''::bytea, next_wrapped = NULL, destroyed_at = now()
        WHERE state <> 'Destroyed' AND ((state = 'PendingDeletion' AND deletion_at <= now())
          OR kek_id = ANY(${kekIds.length ? sql`ARRAY[${sql.join(kekIds)}]::uuid[]` : sql`ARRAY[]::uuid[]`}))
        RETURNING kek_id, version`.execute(trx);
      for (const k of keys.rows)
        await this.kms.audit.append(trx, {
          principal: 'keyward:janitor',
          action: 'destroy',
          keyId: k.id,
          outcome: 'success',
          context: {},
        });
      for (const k of kekIds)
        await this.kms.audit.append(trx, {
          principal: 'keyward:janitor',
          action: 'destroy',
          keyId: k,
          outcome: 'success',
          context: { kind: 'kek' },
        });
      for (const v of versions.rows) {
        await this.kms.audit.append(trx, {
          principal: 'keyward:janitor',
          action: 'destroy',
          keyId: v.kek_id,
          keyVersion: v.version,
          outcome: 'success',
          context: { kind: 'kek-version' },
        });
      }
      for (const k of keys.rows) this.kms.forget(k.id);
      for (const v of versions.rows) this.kms.forget(v.kek_id, v.version);
      return {
        keys: keys.rows.map((k) => k.id),
        keks: kekIds,
        versions: versions.rows.map((v) => `${v.kek_id}/v${v.version}`),
      };
    });
  }
}
