import type { ColumnType, Generated } from 'kysely';

import type { AcmeIdentifier } from '../core/identifiers.ts';

/** Tables of the ACME front end (migration 0003 and later); merged into Database. */

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
/** jsonb: parsed on the way out, written as JSON text. */
type Json<T> = ColumnType<T, string, string>;

export interface AcmeProblemJson {
  type: string;
  detail: string;
  status?: number;
  subproblems?: AcmeProblemJson[];
  identifier?: { type: string; value: string };
}

/** Stored as given in newOrder (RFC 8555 §7.1.3). */
export type AcmeIdentifierJson = AcmeIdentifier;

export type AcmeAccountStatus = 'valid' | 'deactivated' | 'revoked';
export type AcmeOrderStatus = 'pending' | 'ready' | 'processing' | 'valid' | 'invalid';
export type AcmeAuthzStatus = 'pending' | 'valid' | 'invalid' | 'deactivated' | 'expired' | 'revoked';
export type AcmeChallengeStatus = 'pending' | 'processing' | 'valid' | 'invalid';
export type AcmeChallengeType = 'http-01' | 'dns-01' | 'tls-alpn-01';

export interface AcmeSecretsTable {
  name: string;
  /** KWE1 under the service-secrets KEK when `wrapped` (every row, once a server has started). */
  value: Uint8Array;
  wrapped: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: DefaultTimestamp;
}

export interface AcmeSpentNoncesTable {
  nonce: string;
  expires_at: Timestamp;
}

export interface AcmeEabKeysTable {
  key_id: string;
  /** KWE1 under the service-secrets KEK when `wrapped` (every row, once a server has started). */
  hmac_key: Uint8Array;
  wrapped: ColumnType<boolean, boolean | undefined, boolean>;
  label: string | null;
  created_at: DefaultTimestamp;
  account_id: string | null;
  used_at: Timestamp | null;
  /** Set by `keyward eab revoke` (migration 0010). */
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface AcmeAccountsTable {
  id: string;
  key_thumbprint: string;
  jwk: Json<Record<string, unknown>>;
  status: AcmeAccountStatus;
  contact: Json<string[]>;
  tos_agreed: boolean;
  eab_key_id: string | null;
  eab_binding: Json<Record<string, unknown>> | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface AcmeOrdersTable {
  id: string;
  account_id: string;
  status: AcmeOrderStatus;
  expires: Timestamp;
  identifiers: Json<AcmeIdentifierJson[]>;
  not_before: Timestamp | null;
  not_after: Timestamp | null;
  profile: string;
  replaces: string | null;
  error: Json<AcmeProblemJson> | null;
  certificate_serial: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  /** The order's authorizations in the order of its identifiers; fixed at newOrder. */
  authz_ids: Generated<string[]>;
}

export interface AcmeAuthzsTable {
  id: string;
  account_id: string;
  identifier_type: 'dns' | 'ip';
  /** Without the `*.` of a wildcard (RFC 8555 §7.1.4); `wildcard` says whether it had one. */
  identifier_value: string;
  wildcard: boolean;
  status: AcmeAuthzStatus;
  expires: Timestamp;
  validated_at: Timestamp | null;
  created_at: Timestamp;
  /** The order whose newOrder created it: the only one it is in while pending (only valid ones are reused). */
  order_id: string | null;
  /** The challenges offered, by type, and their tokens at the same positions. */
  challenge_types: AcmeChallengeType[];
  challenge_tokens: string[];
  /** The challenge the client asked to validate (one per authorization), and how that went. */
  attempted: AcmeChallengeType | null;
  attempt_status: Exclude<AcmeChallengeStatus, 'pending'> | null;
  attempt_error: Json<AcmeProblemJson> | null;
}

/** Ids of challenges in URLs handed out before challenges were kept in their authorization's row. */
export interface AcmeOldChallengeIdsTable {
  id: string;
  authz_id: string;
  type: AcmeChallengeType;
}

export interface AcmeJobsTable {
  id: string;
  /** The authorization whose attempted challenge the job checks. */
  authz_id: string;
  status: 'queued' | 'done';
  run_at: Timestamp;
  /** Failed checks are retried until then; afterwards the challenge turns invalid. */
  deadline: Timestamp;
  attempts: Generated<number>;
  lease_holder: string | null;
  lease_until: Timestamp | null;
  created_at: Timestamp;
  finished_at: Timestamp | null;
}

export interface AcmeTables {
  acme_secrets: AcmeSecretsTable;
  acme_spent_nonces: AcmeSpentNoncesTable;
  acme_eab_keys: AcmeEabKeysTable;
  acme_accounts: AcmeAccountsTable;
  acme_orders: AcmeOrdersTable;
  acme_authzs: AcmeAuthzsTable;
  acme_old_challenge_ids: AcmeOldChallengeIdsTable;
  acme_jobs: AcmeJobsTable;
}
