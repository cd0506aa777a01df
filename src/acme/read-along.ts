import { type RawBuilder, sql } from 'kysely';

import type { AcmeAccountsTable, AcmeAuthzsTable, AcmeOrdersTable } from '../db/acme-schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AuthzRow, OrderRow } from './views.ts';

/**
 * The rows an ACME POST reads in its nonce's spend statement (acme/nonce.ts): the requesting
 * account, and for a POST-as-GET of an authorization or an order that resource too, so such a
 * request costs one statement. Each table's columns come back prefixed (the tables share column
 * names); the lists are Records over the tables' keys, so a column left out does not compile.
 */
const ACCOUNT: Record<keyof AcmeAccountsTable, true> = {
  id: true,
  key_thumbprint: true,
  jwk: true,
  status: true,
  contact: true,
  tos_agreed: true,
  eab_key_id: true,
  eab_binding: true,
  created_at: true,
  updated_at: true,
};
const AUTHZ: Record<keyof AcmeAuthzsTable, true> = {
  id: true,
  account_id: true,
  identifier_type: true,
  identifier_value: true,
  wildcard: true,
  status: true,
  expires: true,
  validated_at: true,
  created_at: true,
  order_id: true,
  challenge_types: true,
  challenge_tokens: true,
  attempted: true,
  attempt_status: true,
  attempt_error: true,
};
const ORDER: Record<keyof AcmeOrdersTable, true> = {
  id: true,
  account_id: true,
  status: true,
  expires: true,
  identifiers: true,
  not_before: true,
  not_after: true,
  profile: true,
  replaces: true,
  error: true,
  certificate_serial: true,
  created_at: true,
  updated_at: true,
  authz_ids: true,
};

const TABLES = [
  { alias: 'a', columns: Object.keys(ACCOUNT) },
  { alias: 'z', columns: Object.keys(AUTHZ) },
  { alias: 'o', columns: Object.keys(ORDER) },
] as const;

/** What a request asks to read besides its account. */
export interface ReadAlong {
  authzId?: string;
  orderId?: string;
}

/** The rows found; the authorization and order are not yet checked to be the requester's. */
export interface ReadAlongRows {
  account: AccountRow | undefined;
  authz?: AuthzRow | undefined;
  order?: OrderRow | undefined;
}

/**
 * The select list and joins, from a relation `req` with the columns account_id, authz_id and
 * order_id: every column of the tables joined, as `<alias>_<column>`. Orders are joined only for
 * a batch that asks for one (clients poll orders now and then; every POST reads its account).
 */
export function readAlongSql(withOrders: boolean): { columns: RawBuilder<unknown>; joins: RawBuilder<unknown> } {
  const tables = withOrders ? TABLES : TABLES.slice(0, 2);
  return {
    columns: sql.raw(tables.flatMap((t) => t.columns.map((c) => `${t.alias}.${c} AS ${t.alias}_${c}`)).join(', ')),
    joins: sql.raw(
      'LEFT JOIN acme_accounts a ON a.id = req.account_id LEFT JOIN acme_authzs z ON z.id = req.authz_id' +
        (withOrders ? ' LEFT JOIN acme_orders o ON o.id = req.order_id' : ''),
    ),
  };
}

function pick(row: Record<string, unknown>, alias: string, columns: readonly string[]): unknown {
  if (row[`${alias}_id`] === null) return undefined;
  const out: Record<string, unknown> = {};
  for (const c of columns) out[c] = row[`${alias}_${c}`];
  return out;
}

/** The rows out of one result row; an authorization or order only when it was asked for. */
export function readAlongRows(row: Record<string, unknown>, asked: ReadAlong): ReadAlongRows {
  const [account, authz, order] = TABLES;
  const out: ReadAlongRows = { account: pick(row, account.alias, account.columns) as AccountRow | undefined };
  if (asked.authzId !== undefined) out.authz = pick(row, authz.alias, authz.columns) as AuthzRow | undefined;
  if (asked.orderId !== undefined) out.order = pick(row, order.alias, order.columns) as OrderRow | undefined;
  return out;
}
