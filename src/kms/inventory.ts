import { sql } from 'kysely';

import type { Executor, KeyProtection, KeyUsage } from '../db/schema.ts';
import type { StoredTokenRef } from './hierarchy.ts';
import { defaultDataKeyPolicy, effectivePolicy, type KeyPolicy } from './key-policy.ts';
import { resolveKey } from './refs.ts';

/** One line of `kms list`: every kind of key with its state, algorithm, dates and use counts. */
export interface KeySummary {
  id: string;
  kind: 'root-of-trust' | 'kek' | 'key';
  /** KEK name, or the usage of a CA/OCSP/audit key, or the root provider. */
  name: string;
  state: string;
  algorithm: string;
  created: string;
  /** When the KEK got its primary version (rotated), or null. */
  rotated: string | null;
  deletionAt: string | null;
  destroyedAt: string | null;
  /** Signatures / data-key operations for keys and KEKs; DEKs wrapped for KEK versions. */
  uses: number;
  /** Keys only: wrapped (envelope encryption) or hsm (in a PKCS#11 token, never extractable). */
  protection?: KeyProtection;
  versions?: KekVersionSummary[];
}

export interface KekVersionSummary {
  version: number;
  state: string;
  primary: boolean;
  rootId: string;
  created: string;
  lastUsed: string | null;
  deletionAt: string | null;
  destroyedAt: string | null;
  /** Live keys whose DEK this version wraps. */
  wrappedDeks: number;
  /** Set while rotate-root is moving this version to a new root. */
  pendingRootId: string | null;
}

export interface KeyDetail extends KeySummary {
  purpose?: string;
  usage?: string;
  kekId?: string | null;
  kekVersion?: number | null;
  spkiSha256?: string;
  minUnwrapVersion?: number;
  autoRotateDays?: number | null;
  policy?: KeyPolicy;
  /** RSA keys: PKCS#1 v1.5 or PSS signatures. */
  rsaScheme?: 'pkcs1' | 'pss';
  /** HSM keys: the token, the object's CKA_LABEL and CKA_ID, and its attributes when made. */
  token?: StoredTokenRef;
  auditEvents: number;
}

const iso = (d: Date | string | null | undefined): string | null => (d ? new Date(d).toISOString() : null);

async function versionSummaries(db: Executor, kekId?: string): Promise<Map<string, KekVersionSummary[]>> {
  let q = db
    .selectFrom('kms_kek_versions as v')
    .select([
      'v.kek_id',
      'v.version',
      'v.state',
      'v.is_primary',
      'v.root_id',
      'v.next_root_id',
      'v.created_at',
      'v.last_used_at',
      'v.deletion_at',
      'v.destroyed_at',
      sql<number>`(SELECT count(*) FROM kms_keys k WHERE k.kek_id = v.kek_id AND k.kek_version = v.version AND k.state <> 'Destroyed')`.as(
        'deks',
      ),
    ])
    .orderBy('v.kek_id')
    .orderBy('v.version');
  if (kekId) q = q.where('v.kek_id', '=', kekId);
  const out = new Map<string, KekVersionSummary[]>();
  for (const r of await q.execute()) {
    const list = out.get(r.kek_id) ?? [];
    list.push({
      version: r.version,
      state: r.state,
      primary: r.is_primary,
      rootId: r.root_id,
      created: iso(r.created_at)!,
      lastUsed: iso(r.last_used_at),
      deletionAt: iso(r.deletion_at),
      destroyedAt: iso(r.destroyed_at),
      wrappedDeks: Number(r.deks),
      pendingRootId: r.next_root_id,
    });
    out.set(r.kek_id, list);
  }
  return out;
}

export async function listKeys(db: Executor): Promise<KeySummary[]> {
  const roots = await db.selectFrom('kms_roots').selectAll().orderBy('created_at').execute();
  const keks = await db.selectFrom('kms_keks').selectAll().orderBy('created_at').execute();
  const keys = await db.selectFrom('kms_keys').selectAll().orderBy('created_at').execute();
  const versions = await versionSummaries(db);
  const out: KeySummary[] = [];
  for (const r of roots) {
    out.push({
      id: r.id,
      kind: 'root-of-trust',
      name: r.provider,
      state: r.state,
      algorithm: r.provider === 'awskms' ? 'aws-kms-symmetric' : 'aes-256-gcm',
      created: iso(r.created_at)!,
      rotated: null,
      deletionAt: null,
      destroyedAt: iso(r.retired_at),
      uses: 0,
    });
  }
  for (const k of keks) {
    const vs = versions.get(k.id) ?? [];
    const primary = vs.find((v) => v.primary);
    out.push({
      id: k.id,
      kind: 'kek',
      name: k.name,
      state: k.state,
      algorithm: 'aes-256',
      created: iso(k.created_at)!,
      rotated: primary && primary.version > 1 ? primary.created : null,
      deletionAt: iso(k.deletion_at),
      destroyedAt: iso(k.destroyed_at),
      uses: Number(k.use_count) + vs.reduce((n, v) => n + v.wrappedDeks, 0),
      versions: vs,
    });
  }
  for (const k of keys) {
    out.push({
      id: k.id,
      kind: 'key',
      name: k.usage,
      state: k.state,
      algorithm: k.alg,
      created: iso(k.created_at)!,
      rotated: null,
      deletionAt: iso(k.deletion_at),
      destroyedAt: iso(k.destroyed_at),
      uses: Number(k.use_count),
      protection: k.backend,
    });
  }
  return out;
}

export async function showKey(db: Executor, text: string): Promise<KeyDetail> {
  const ref = await resolveKey(db, text);
  const all = await listKeys(db);
  const summary = all.find((s) => s.id === ref.id)!;
  const events = await db
    .selectFrom('audit_events')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('key_id', '=', ref.id)
    .executeTakeFirstOrThrow();
  const detail: KeyDetail = { ...summary, auditEvents: Number(events.n) };
  if (ref.kind === 'key') {
    const k = await db.selectFrom('kms_keys').selectAll().where('id', '=', ref.id).executeTakeFirstOrThrow();
    Object.assign(detail, {
      usage: k.usage,
      kekId: k.kek_id,
      kekVersion: k.kek_version,
      spkiSha256: Buffer.from(k.spki_sha256).toString('hex'),
      policy: effectivePolicy(k.policy, k.usage),
      ...(k.alg.startsWith('rsa-') ? { rsaScheme: k.rsa_scheme } : {}),
      ...(k.token_ref ? { token: k.token_ref as StoredTokenRef } : {}),
    });
  } else if (ref.kind === 'kek' || ref.kind === 'kek-version') {
    const k = await db.selectFrom('kms_keks').selectAll().where('id', '=', ref.id).executeTakeFirstOrThrow();
    Object.assign(detail, {
      purpose: k.purpose,
      minUnwrapVersion: k.min_unwrap_version,
      autoRotateDays: k.auto_rotate_days,
      policy: k.policy
        ? effectivePolicy(k.policy, 'provisioner')
        : k.purpose === 'app-data'
          ? defaultDataKeyPolicy([])
          : undefined,
    });
  }
  return detail;
}

/** The usage of the key KEY names, or null when it names a KEK or a KEK version. */
export async function keyUsageOf(db: Executor, text: string): Promise<KeyUsage | null> {
  const ref = await resolveKey(db, text);
  if (ref.kind !== 'key') return null;
  const row = await db.selectFrom('kms_keys').select('usage').where('id', '=', ref.id).executeTakeFirst();
  return row?.usage ?? null;
}
