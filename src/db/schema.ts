import type { ColumnType, Generated, Insertable, Kysely, Selectable, Transaction } from 'kysely';

import type { IdentifierType, SanSet } from '../core/identifiers.ts';
import type { AcmeTables } from './acme-schema.ts';

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
/** int8 comes back as a string from pg and as a bigint/number from PGlite; read it through Number(). */
type Int8 = ColumnType<string | number | bigint, number | bigint | string, number | bigint | string>;
type Json<T> = ColumnType<T, string, string>;
type Bytes = Uint8Array;

export interface InstallationTable {
  id: number;
  install_id: string;
  created_at: DefaultTimestamp;
}

export interface KmsRootsTable {
  id: string;
  provider: 'file' | 'passphrase' | 'pkcs11' | 'awskms' | 'shares';
  params: Json<Record<string, unknown>>;
  kcv: Bytes | null;
  state: Generated<string>;
  created_at: DefaultTimestamp;
  retired_at: Timestamp | null;
}

export interface KmsKeksTable {
  id: string;
  name: string;
  purpose: 'ca-keys' | 'app-data' | 'import' | 'audit' | 'secrets';
  auto_rotate_days: number | null;
  min_unwrap_version: Generated<number>;
  created_at: DefaultTimestamp;
  // 0005_kms_lifecycle
  state: ColumnType<KekState, KekState | undefined, KekState>;
  policy: ColumnType<unknown, string | null | undefined, string | null> | null;
  deletion_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  destroyed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  use_count: ColumnType<string | number | bigint, never, number | bigint | string>;
}

export type KekState = 'Enabled' | 'Disabled' | 'PendingDeletion' | 'Destroyed';

/** 0005_kms_lifecycle: one wrapped-import job (kms import-params). */
export interface KmsImportJobsTable {
  id: string;
  target_key_id: string;
  usage: KeyUsage;
  wrapping_spki: Bytes;
  wrapping_priv: Bytes | null;
  token_sha256: Bytes;
  expires_at: Timestamp;
  used_at: Timestamp | null;
  created_at: DefaultTimestamp;
}

/** 0005_kms_lifecycle: a signed audit chain head. */
export interface AuditCheckpointsTable {
  seq: Int8;
  head_hash: Bytes;
  ts: Timestamp;
  key_id: string;
  spki: Bytes;
  sig: Bytes;
  prev_sig: Bytes;
}

export interface KmsKekVersionsTable {
  kek_id: string;
  version: number;
  state: Generated<string>;
  is_primary: Generated<boolean>;
  root_id: string;
  wrapped: Bytes;
  next_root_id: string | null;
  next_wrapped: Bytes | null;
  created_at: DefaultTimestamp;
  last_used_at: Timestamp | null;
  deletion_at: Timestamp | null;
  destroyed_at: Timestamp | null;
}

export type KeyUsage = 'root-ca' | 'intermediate' | 'ocsp' | 'audit' | 'provisioner' | 'tls';
export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion' | 'PendingImport' | 'Destroyed';

export interface KmsKeysTable {
  id: string;
  usage: KeyUsage;
  alg: string;
  spki_sha256: Bytes;
  /** How the private key is protected: wrapped (envelope encryption) or hsm (in a PKCS#11 token). */
  backend: ColumnType<KeyProtection, KeyProtection | undefined, KeyProtection>;
  state: ColumnType<KeyState, KeyState | undefined, KeyState>;
  policy: Json<unknown> | null;
  kek_id: string | null;
  kek_version: number | null;
  dek_wrapped: Bytes | null;
  key_ciphertext: Bytes | null;
  external_ref: string | null;
  created_at: DefaultTimestamp;
  deletion_at: Timestamp | null;
  destroyed_at: Timestamp | null;
  use_count: ColumnType<string | number | bigint, never, number | bigint | string>;
  // 0007_hsm_keys
  /** SubjectPublicKeyInfo DER (HSM keys; wrapped keys carry it inside their ciphertext). */
  spki: ColumnType<Bytes | null, Bytes | null | undefined, Bytes | null>;
  /** Where an HSM key lives: { token, id (CKA_ID hex), label, attributes }. */
  token_ref: ColumnType<unknown, string | null | undefined, string | null> | null;
  rsa_scheme: ColumnType<'pkcs1' | 'pss', 'pkcs1' | 'pss' | undefined, 'pkcs1' | 'pss'>;
}

export type KeyProtection = 'wrapped' | 'hsm';

export interface AuditHeadTable {
  id: number;
  seq: Int8;
  hash: Bytes;
  /** 0007_audit_keyed: the first event hashed with the chain key (null until the key exists). */
  keyed_from: ColumnType<string | number | bigint | null, never, number | bigint | string | null>;
}

export interface AuditEventsTable {
  seq: Int8;
  event_id: string;
  ts: Timestamp;
  principal: string;
  action: string;
  key_id: string | null;
  key_version: number | null;
  outcome: 'success' | 'denied' | 'failure';
  error_code: string | null;
  context: Json<Record<string, unknown>>;
  prev_hash: Bytes;
  hash: Bytes;
}

export interface IssuersTable {
  id: string;
  kind: 'root' | 'intermediate';
  parent_id: string | null;
  /** null only for a root we trust without holding its key (`ca adopt --trust`, migration 0016). */
  key_id: string | null;
  certificate: Bytes;
  subject: string;
  ski: Bytes;
  not_before: Timestamp;
  not_after: Timestamp;
  /** Computed from state (= 'active'); never written. */
  active: ColumnType<boolean, never, never>;
  state: ColumnType<IssuerState, IssuerState | undefined, IssuerState>;
  /** Profiles it signs; empty: the default issuer. */
  profiles: ColumnType<string[], string | undefined, string>;
  state_changed_at: DefaultTimestamp;
  replaces: string | null;
  created_at: DefaultTimestamp;
}

/** pending: made, issues nothing yet; retiring: issues nothing new, still answers CRL/OCSP. */
export type IssuerState = 'pending' | 'active' | 'retiring' | 'retired';

/** A root certified by another root (root rollover, migration 0012). */
export interface IssuerCrossCertificatesTable {
  id: string;
  subject_issuer_id: string;
  signer_issuer_id: string;
  certificate: Bytes;
  not_after: Timestamp;
  created_at: DefaultTimestamp;
}

export interface SerialReservationsTable {
  serial: string;
  issuer_id: string;
  profile: string;
  requester: string;
  request: Json<Record<string, unknown>>;
  status: ColumnType<'reserved' | 'issued' | 'abandoned', 'reserved' | 'issued' | 'abandoned' | undefined>;
  created_at: DefaultTimestamp;
  /** When crash recovery (or a refusal to sign) gave the reservation up. */
  abandoned_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /** For an abandoned reservation: whether its serial had been signed (null: not known / not abandoned). */
  signed: ColumnType<boolean | null, boolean | null | undefined, boolean | null>;
}

export interface CertificatesTable {
  serial: string;
  issuer_id: string;
  der: Bytes;
  common_name: string | null;
  sans: Json<SanSet>;
  not_before: Timestamp;
  not_after: Timestamp;
  profile: string;
  spki_sha256: Bytes;
  requester: string;
  status: ColumnType<'valid' | 'revoked', 'valid' | 'revoked' | undefined>;
  revoked_at: Timestamp | null;
  revocation_reason: number | null;
  created_at: DefaultTimestamp;
  crl_shard: ColumnType<number, number | undefined, number>;
}

export interface BlockedKeysTable {
  spki_sha256: Bytes;
  reason: string;
  source_serial: string | null;
  created_at: DefaultTimestamp;
}

export interface CrlsTable {
  issuer_id: string;
  shard: number;
  crl_number: Int8;
  der: Bytes | null;
  this_update: Timestamp | null;
  next_update: Timestamp | null;
  stale_since: Timestamp | null;
}

export interface LeasesTable {
  name: string;
  holder: string;
  expires_at: Timestamp;
}

export interface OcspSignersTable {
  id: string;
  issuer_id: string;
  key_id: string;
  certificate: Bytes;
  not_before: Timestamp;
  not_after: Timestamp;
  created_at: DefaultTimestamp;
}

export interface OcspResponsesTable {
  serial: string;
  der: Bytes;
  this_update: Timestamp;
  next_update: Timestamp;
  status: 'good' | 'revoked';
}

export interface Database extends AcmeTables {
  installation: InstallationTable;
  kms_roots: KmsRootsTable;
  kms_keks: KmsKeksTable;
  kms_kek_versions: KmsKekVersionsTable;
  kms_keys: KmsKeysTable;
  audit_head: AuditHeadTable;
  audit_events: AuditEventsTable;
  issuers: IssuersTable;
  issuer_cross_certificates: IssuerCrossCertificatesTable;
  serial_reservations: SerialReservationsTable;
  certificates: CertificatesTable;
  blocked_keys: BlockedKeysTable;
  crls: CrlsTable;
  leases: LeasesTable;
  ocsp_signers: OcspSignersTable;
  ocsp_responses: OcspResponsesTable;
  kms_import_jobs: KmsImportJobsTable;
  audit_checkpoints: AuditCheckpointsTable;
}

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Either the database or an open transaction: functions that take this join the caller's unit of work. */
export type Executor = Kysely<Database>;

export type CertificateRow = Selectable<CertificatesTable>;
export type IssuerRow = Selectable<IssuersTable>;
export type CrossCertificateRow = Selectable<IssuerCrossCertificatesTable>;
export type KmsKeyRow = Selectable<KmsKeysTable>;
export type AuditEventRow = Selectable<AuditEventsTable>;
export type NewCertificate = Insertable<CertificatesTable>;

// 0006_mesh_policy: name policy rules, rate-limit counters, mesh bootstrap tokens. Merged into
// Database by declaration merging so this block is self-contained.
export type PolicyEffect = 'allow' | 'deny';
export type PolicyKind = IdentifierType;

export interface PolicyRulesTable {
  id: string;
  scope: string;
  effect: PolicyEffect;
  kind: PolicyKind;
  pattern: string;
  created_by: string;
  created_at: DefaultTimestamp;
}

export interface RateLimitCountersTable {
  name: string;
  key: string;
  window_start: Timestamp;
  count: number;
}

export interface MeshProvisionersTable {
  name: string;
  key_id: string;
  kid: string;
  public_jwk: Json<Record<string, string>>;
  created_at: DefaultTimestamp;
}

export interface MeshTokensTable {
  jti: string;
  kid: string;
  names: Json<SanSet>;
  profile: string;
  expires_at: Timestamp;
  created_by: string;
  created_at: DefaultTimestamp;
  used_at: Timestamp | null;
  used_serial: string | null;
}

export interface Database {
  policy_rules: PolicyRulesTable;
  rate_limit_counters: RateLimitCountersTable;
  mesh_provisioners: MeshProvisionersTable;
  mesh_tokens: MeshTokensTable;
}

// 0011_dual_control: trust-changing commands waiting for a second administrator.
export type ProposalState = 'pending' | 'approved' | 'executed' | 'failed' | 'rejected';

export interface KmsProposalsTable {
  id: string;
  command: string;
  summary: string;
  sealed_input: Bytes;
  kek_id: string;
  kek_version: number;
  proposer: string;
  created_at: DefaultTimestamp;
  expires_at: Timestamp;
  state: ColumnType<ProposalState, ProposalState | undefined, ProposalState>;
  decided_by: string | null;
  decided_at: Timestamp | null;
  error: string | null;
}

export interface Database {
  kms_proposals: KmsProposalsTable;
}
