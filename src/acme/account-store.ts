import type { Selectable } from 'kysely';

import type { AcmeAccountsTable } from '../db/acme-schema.ts';
import type { Db } from '../db/schema.ts';

export type AccountRow = Selectable<AcmeAccountsTable>;

export async function accountById(db: Db, id: string): Promise<AccountRow | undefined> {
  return db.selectFrom('acme_accounts').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function accountByThumbprint(db: Db, thumbprint: string): Promise<AccountRow | undefined> {
  return db.selectFrom('acme_accounts').selectAll().where('key_thumbprint', '=', thumbprint).executeTakeFirst();
}
