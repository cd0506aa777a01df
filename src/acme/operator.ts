import { sql } from 'kysely';

import { KeywardError } from '../core/errors.ts';
import type { AcmeAccountStatus } from '../db/acme-schema.ts';
import type { Db, Executor } from '../db/schema.ts';
import type { AuditLog, KeyHierarchy } from '../kms/index.ts';
import type { AccountRow } from './account-store.ts';
import { createEabKey, type EabKey } from './eab.ts';
import { invalidatedBy } from './order-store.ts';
import { secretBox } from './wrap-secrets.ts';

// What an operator does to ACME accounts and External Account Binding keys (`keyward eab …`,
// `keyward acme accounts …`, the admin web page). Every change is audited.

export type EabKeyState = 'unused' | 'bound' | 'revoked';

export interface EabKeySummary {
  keyId: string;
  label: string | null;
  state: EabKeyState;
  createdAt: string;
  /** The account the key bound, once used. */
  accountId: string | null;
  usedAt: string | null;
  revokedAt: string | null;
}

export interface AccountSummary {
  id: string;
  status: AcmeAccountStatus;
  contact: string[];
  eabKeyId: string | null;
  createdAt: string;
  updatedAt: string;
}

const MAX_LIST = 1000;

function listLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST)
    throw new KeywardError('malformed', `limit must be a whole number from 1 to ${MAX_LIST}`);
  return limit;
}

/** `keyward eab create`, audited (the HMAC key itself never reaches the audit log). */
export async function createEab(
  db: Db,
  kms: KeyHierarchy,
  label: string | undefined,
  principal: string,
): Promise<EabKey> {
  return db.transaction().execute(async (trx) => {
    const key = await createEabKey(secretBox(kms), trx, { label });
    await kms.audit.append(trx, {
      principal,
      action: 'create-eab-key',
      outcome: 'success',
      context: { keyId: key.keyId, label: key.label },
    });
    return key;
  });
}

export async function listEabKeys(
  db: Db,
  opts: { state?: EabKeyState; limit?: number } = {},
): Promise<EabKeySummary[]> {
  let q = db
    .selectFrom('acme_eab_keys')
    .select(['key_id', 'label', 'created_at', 'account_id', 'used_at', 'revoked_at'])
    .orderBy('created_at', 'desc')
    .orderBy('key_id')
    .limit(listLimit(opts.limit));
  if (opts.state === 'revoked') q = q.where('revoked_at', 'is not', null);
  if (opts.state === 'bound') q = q.where('revoked_at', 'is', null).where('account_id', 'is not', null);
  if (opts.state === 'unused') q = q.where('revoked_at', 'is', null).where('account_id', 'is', null);
  const rows = await q.execute();
  return rows.map((r) => ({
    keyId: r.key_id,
    label: r.label,
    state: r.revoked_at ? 'revoked' : r.account_id ? 'bound' : 'unused',
    createdAt: r.created_at.toISOString(),
    accountId: r.account_id,
    usedAt: r.used_at?.toISOString() ?? null,
    revokedAt: r.revoked_at?.toISOString() ?? null,
  }));
}

/**
 * Ends an account: `deactivated` (its holder or an operator asked) or `revoked` (RFC 8555 §7.1.2:
 * the server ended it, here because its EAB key was revoked). Its pending and ready orders become
 * invalid so nothing more is issued on them (§7.3.6). Returns undefined if it was not valid.
 */
export async function endAccount(
  trx: Executor,
  id: string,
  status: 'deactivated' | 'revoked',
  now: Date,
): Promise<AccountRow | undefined> {
  const row = await trx
    .updateTable('acme_accounts')
    .set({ status, updated_at: now })
    .where('id', '=', id)
    .where('status', '=', 'valid')
    .returningAll()
    .executeTakeFirst();
  if (!row) return undefined;
  await trx
    .updateTable('acme_orders')
    .set(invalidatedBy(`The account was ${status}`, now))
    .where('account_id', '=', id)
    .where('status', 'in', ['pending', 'ready'])
    .execute();
  return row;
}

export interface EabRevocation {
  keyId: string;
  revokedAt: string;
  /** False when the key was already revoked (nothing changed). */
  changed: boolean;
  /** The account the key had bound, revoked with it. */
  accountRevoked: string | null;
}

/** `keyward eab revoke`: the key binds nothing more, and the account it bound is revoked. */
export async function revokeEabKey(db: Db, audit: AuditLog, keyId: string, principal: string): Promise<EabRevocation> {
  return db.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom('acme_eab_keys')
      .select(['key_id', 'account_id', 'revoked_at'])
      .where('key_id', '=', keyId)
      .forUpdate()
      .executeTakeFirst();
    if (!row) throw new KeywardError('notFound', `no EAB key with id ${keyId} (see keyward eab list)`);
    if (row.revoked_at) return { keyId, revokedAt: row.revoked_at.toISOString(), changed: false, accountRevoked: null };
    const now = new Date();
    const revoked = await trx
      .updateTable('acme_eab_keys')
      .set({ revoked_at: sql<Date>`now()` })
      .where('key_id', '=', keyId)
      .returning('revoked_at')
      .executeTakeFirstOrThrow();
    const account = row.account_id ? await endAccount(trx, row.account_id, 'revoked', now) : undefined;
    await audit.append(trx, {
      principal,
      action: 'revoke-eab-key',
      outcome: 'success',
      context: { keyId, account: account?.id ?? null },
    });
    return {
      keyId,
      revokedAt: revoked.revoked_at!.toISOString(),
      changed: true,
      accountRevoked: account?.id ?? null,
    };
  });
}

function accountSummary(r: AccountRow): AccountSummary {
  return {
    id: r.id,
    status: r.status,
    contact: r.contact,
    eabKeyId: r.eab_key_id,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

export async function listAccounts(
  db: Db,
  opts: { status?: AcmeAccountStatus; limit?: number } = {},
): Promise<AccountSummary[]> {
  let q = db
    .selectFrom('acme_accounts')
    .selectAll()
    .orderBy('created_at', 'desc')
    .orderBy('id')
    .limit(listLimit(opts.limit));
  if (opts.status) q = q.where('status', '=', opts.status);
  return (await q.execute()).map(accountSummary);
}

export interface AccountDeactivation {
  account: AccountSummary;
  /** False when the account was not valid any more (nothing changed). */
  changed: boolean;
}

/** `keyward acme accounts deactivate`: as if its holder had deactivated it (RFC 8555 §7.3.6). */
export async function deactivateAccount(
  db: Db,
  audit: AuditLog,
  id: string,
  principal: string,
): Promise<AccountDeactivation> {
  return db.transaction().execute(async (trx) => {
    const ended = await endAccount(trx, id, 'deactivated', new Date());
    if (!ended) {
      const current = await trx.selectFrom('acme_accounts').selectAll().where('id', '=', id).executeTakeFirst();
      if (!current)
        throw new KeywardError('notFound', `no ACME account with id ${id} (see keyward acme accounts list)`);
      return { account: accountSummary(current), changed: false };
    }
    await audit.append(trx, {
      principal,
      action: 'deactivate-acme-account',
      outcome: 'success',
      context: { account: id },
    });
    return { account: accountSummary(ended), changed: true };
  });
}
