import { type RawBuilder, sql } from 'kysely';

import type { AcmeAccountsTable, AcmeAuthzsTable, AcmeOrdersTable } from '../db/acme-schema.ts';
import type { Gathered } from '../issuance/index.ts';
import { countersOf, parseCounters, type RateLimitName } from '../policy/index.ts';
import type { ChallengeKind } from '../validation/index.ts';
import type { AccountRow } from './account-store.ts';
import type { OrderCertificate } from './recent-certificates.ts';
import type { AuthzRow, OrderRow } from './views.ts';

/**
 * The rows an ACME POST reads in its nonce's spend statement (acme/nonce.ts): the requesting
 * account, and for a POST-as-GET of an authorization, an order or a certificate that resource
 * too, so such a request costs one statement on any replica. Each table's columns come back
 * prefixed (the tables share column names); the lists are Records over the tables' keys, so a
 * column left out does not compile.
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

/**
 * Each read: its alias (its columns come back as `<alias>_<column>`), its columns, and its join on
 * the request column that names the row. Orders and certificates are read by few requests, so a
 * batch joins them only when one of its requests asks (a statement text per combination).
 */
const READS = {
  account: { alias: 'a', columns: Object.keys(ACCOUNT), join: 'acme_accounts a ON a.id = req.account_id' },
  authz: { alias: 'z', columns: Object.keys(AUTHZ), join: 'acme_authzs z ON z.id = req.authz_id' },
  order: { alias: 'o', columns: Object.keys(ORDER), join: 'acme_orders o ON o.id = req.order_id' },
  certificate: {
    alias: 'c',
    columns: ['account_id', 'der', 'issuer_id'],
    // An order names its certificate; the ordering account may download it.
    join: `LATERAL (SELECT co.account_id, cc.der, cc.issuer_id, cc.serial AS id
      FROM acme_orders co JOIN certificates cc ON cc.serial = co.certificate_serial
      WHERE co.certificate_serial = req.certificate_serial LIMIT 1) c ON true`,
  },
} as const;

/**
 * What finalize's issuance decision judges besides the request: how each of the order's names was
 * proven (for CAA freshness) and the certificatesPerName counters of its names.
 */
const GATHERED = sql`
  (SELECT coalesce(json_agg(json_build_object(
      'type', da.identifier_type,
      'value', CASE WHEN da.wildcard THEN '*.' || da.identifier_value ELSE da.identifier_value END,
      'method', da.attempted, 'validatedAt', da.validated_at)), '[]')
    FROM acme_authzs da WHERE da.id = ANY (o.authz_ids) AND da.attempt_status = 'valid') AS o_proofs,
  ${countersOf(
    'certificatesPerName' satisfies RateLimitName,
    sql`ARRAY(SELECT jsonb_array_elements(o.identifiers)->>'value')`,
  )} AS o_name_counters`;

/** What a request asks to read besides its account. */
export interface ReadAlong {
  authzId?: string;
  orderId?: string;
  /** With `orderId`: what the issuance decision judges of the order too (finalize). */
  gathered?: boolean;
  /** A certificate's serial, for its download. */
  certificateSerial?: string;
}

/** The rows found; the authorization, order and certificate are not yet checked to be the requester's. */
export interface ReadAlongRows {
  account: AccountRow | undefined;
  authz?: AuthzRow | undefined;
  order?: OrderRow | undefined;
  certificate?: OrderCertificate | undefined;
  /** With the order, when `gathered` was asked for: what finalize's decision judges. */
  gathered?: Required<Gathered>;
}

/** Which of the optional reads a batch needs: the key of its statement text. */
export interface OptionalReads {
  order: boolean;
  gathered: boolean;
  certificate: boolean;
}

export const optionalReadsOf = (asked: readonly ReadAlong[]): OptionalReads => ({
  order: asked.some((r) => r.orderId !== undefined),
  gathered: asked.some((r) => r.orderId !== undefined && r.gathered === true),
  certificate: asked.some((r) => r.certificateSerial !== undefined),
});

/**
 * The select list and joins, from a relation `req` with the columns account_id, authz_id,
 * order_id and certificate_serial: every column of the rows joined, as `<alias>_<column>`.
 */
export function readAlongSql(optional: OptionalReads): { columns: RawBuilder<unknown>; joins: RawBuilder<unknown> } {
  const reads = [
    READS.account,
    READS.authz,
    ...(optional.order ? [READS.order] : []),
    ...(optional.certificate ? [READS.certificate] : []),
  ];
  const columns = sql.raw(
    reads
      .flatMap((r) => [
        `${r.alias}.id AS ${r.alias}_id`,
        ...r.columns.filter((c) => c !== 'id').map((c) => `${r.alias}.${c} AS ${r.alias}_${c}`),
      ])
      .join(', '),
  );
  return {
    // Computed for every row of the batch that has an order: finalizes are most of those.
    columns: optional.order && optional.gathered ? sql`${columns}, ${GATHERED}` : columns,
    joins: sql.raw(reads.map((r) => `LEFT JOIN ${r.join}`).join(' ')),
  };
}

function gathered(row: Record<string, unknown>): Required<Gathered> {
  const proofs = row.o_proofs as {
    type: 'dns' | 'ip';
    value: string;
    method: ChallengeKind;
    validatedAt: string | null;
  }[];
  return {
    proofs: proofs.map((p) => ({
      identifier: { type: p.type, value: p.value },
      method: p.method,
      // A valid authorization always has its time; none reads as stale, so CAA is checked again.
      validatedAt: new Date(p.validatedAt ?? 0),
    })),
    nameCounters: parseCounters(row.o_name_counters),
  };
}

function pick(row: Record<string, unknown>, alias: string, columns: readonly string[]): unknown {
  if (row[`${alias}_id`] === null) return undefined;
  const out: Record<string, unknown> = {};
  for (const c of columns) out[c] = row[`${alias}_${c}`];
  return out;
}

/** The rows out of one result row; the optional ones only when they were asked for. */
export function readAlongRows(row: Record<string, unknown>, asked: ReadAlong): ReadAlongRows {
  const out: ReadAlongRows = {
    account: pick(row, READS.account.alias, READS.account.columns) as AccountRow | undefined,
  };
  if (asked.authzId !== undefined)
    out.authz = pick(row, READS.authz.alias, READS.authz.columns) as AuthzRow | undefined;
  if (asked.orderId !== undefined) {
    out.order = pick(row, READS.order.alias, READS.order.columns) as OrderRow | undefined;
    if (out.order && asked.gathered) out.gathered = gathered(row);
  }
  if (asked.certificateSerial !== undefined)
    out.certificate = pick(row, READS.certificate.alias, READS.certificate.columns) as OrderCertificate | undefined;
  return out;
}
