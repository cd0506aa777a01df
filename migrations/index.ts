import type { Migration } from 'kysely';

import * as m0001 from './0001_foundation.ts';
import * as m0002 from './0002_revocation.ts';
import * as m0003 from './0003_acme.ts';
import * as m0004 from './0004_revocation_lookups.ts';
import * as m0005 from './0005_kms_lifecycle.ts';
import * as m0006 from './0006_mesh_policy.ts';
import * as m0007 from './0007_hsm_keys.ts';
import * as m0008 from './0008_audit_keyed.ts';
import * as m0009 from './0009_shares_root.ts';
import * as m0010 from './0010_eab_revocation.ts';
import * as m0011 from './0011_dual_control.ts';
import * as m0012 from './0012_issuer_states.ts';
import * as m0013 from './0013_cross_certificates.ts';
import * as m0014 from './0014_reservation_recovery.ts';
import * as m0015 from './0015_wrapped_secrets.ts';
import * as m0016 from './0016_trusted_roots.ts';
import * as m0017 from './0017_hot_path_references.ts';
import * as m0018 from './0018_lean_acme_rows.ts';
import * as m0018b from './0018_order_authz_ids.ts';

/** Ordered by name; a new migration is a new file listed here, never an edit to an old one. */
export const migrations: Record<string, Migration> = {
  '0001_foundation': m0001,
  '0002_revocation': m0002,
  '0003_acme': m0003,
  '0004_revocation_lookups': m0004,
  '0005_kms_lifecycle': m0005,
  '0006_mesh_policy': m0006,
  '0007_hsm_keys': m0007,
  '0008_audit_keyed': m0008,
  '0009_shares_root': m0009,
  '0010_eab_revocation': m0010,
  '0011_dual_control': m0011,
  '0012_issuer_states': m0012,
  '0013_cross_certificates': m0013,
  '0014_reservation_recovery': m0014,
  '0015_wrapped_secrets': m0015,
  '0016_trusted_roots': m0016,
  '0017_hot_path_references': m0017,
  '0018_lean_acme_rows': m0018,
  '0018_order_authz_ids': m0018b,
};
