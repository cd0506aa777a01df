import { sql } from 'kysely';

import type { CaKeyType } from '../config/schema.ts';
import { type Clock, systemClock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { Db, Executor, IssuerRow, IssuerState } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import { insertIssuer } from './authority.ts';
import { buildSubordinateCa } from './ca-builder.ts';
import type { NameConstraintsSpec } from './cert-extensions.ts';
import { currentRoot } from './chains.ts';
import { crossCertify } from './cross-certificates.ts';
import { announceIssuerChange, chooseIssuer, holdsKey, issuerKey, type IssuerRegistry } from './issuers.ts';
import { nameConstraintsSpecOf } from './name-constraints.ts';
import { randomSerial } from './serial.ts';

/** RFC 5280 leaves a minute of back-dating to absorb clock skew between us and relying parties. */
const BACKDATE_MS = 60_000;

export interface IssuerLifecycleDeps {
  db: Db;
  kms: KeyHierarchy;
  registry: IssuerRegistry;
  /** Names of the configured profiles: each must keep an issuer after every change. */
  profiles: readonly string[];
  organization: string;
  clock?: Clock;
}

export interface IntermediateSpec {
  /** The root that signs it; default the newest active root. */
  parentId?: string;
  keyType: CaKeyType;
  lifetimeMs: number;
  commonName: string;
  nameConstraints?: NameConstraintsSpec;
  /** Profiles it signs; empty or absent: a default issuer. */
  profiles?: string[];
  protection?: 'wrapped' | 'hsm';
}

/** Every change to issuers takes this lock, so two operators (or replicas) can't interleave. */
async function lockIssuers(trx: Executor): Promise<IssuerRow[]> {
  await sql`SELECT pg_advisory_xact_lock(hashtext('keyward:issuers'))`.execute(trx);
  return trx.selectFrom('issuers').selectAll().orderBy('created_at').orderBy('id').execute();
}

export function find(rows: IssuerRow[], id: string): IssuerRow {
  const row = rows.find((r) => r.id === id);
  if (!row) throw new KeywardError('notFound', `no issuer with id ${id} (see keyward ca issuers)`);
  return row;
}

export function checkProfiles(deps: IssuerLifecycleDeps, profiles: readonly string[]): void {
  const unknown = profiles.filter((p) => !deps.profiles.includes(p));
  if (unknown.length)
    throw new KeywardError(
      'usage',
      `--profiles: unknown profile ${unknown.map((p) => `"${p}"`).join(', ')} (known: ${deps.profiles.join(', ')})`,
    );
}

/** Refuses a change after which some configured profile would have no active issuer. */
function checkEveryProfileServed(deps: IssuerLifecycleDeps, after: IssuerRow[], what: string): void {
  const orphans = deps.profiles.filter((p) => !chooseIssuer(after, p));
  if (orphans.length)
    throw new KeywardError(
      'conflict',
      `${what} would leave profile ${orphans.map((p) => `"${p}"`).join(', ')} with no active issuer; add or activate another issuer for it first`,
    );
}

/**
 * Makes a key and an intermediate certificate under a root, in the caller's transaction. The
 * certificate never outlives its root.
 */
async function makeIntermediate(
  deps: IssuerLifecycleDeps,
  trx: Executor,
  rows: IssuerRow[],
  spec: IntermediateSpec,
  principal: string,
  opts: { state: IssuerState; replaces?: string },
): Promise<IssuerRow> {
  const parent = spec.parentId ? find(rows, spec.parentId) : currentRoot(rows);
  if (!parent) throw new KeywardError('notInitialized', 'there is no active root to sign an intermediate');
  if (parent.kind !== 'root')
    throw new KeywardError(
      'usage',
      `--parent: issuer ${parent.id} is an intermediate; intermediates are signed by a root`,
    );
  const parentKey = issuerKey(parent);
  if (parent.state !== 'active')
    throw new KeywardError(
      'conflict',
      `root ${parent.id} is ${parent.state}; only an active root signs new intermediates`,
    );
  const now = (deps.clock ?? systemClock).now();
  const notAfter = new Date(Math.min(now.getTime() + spec.lifetimeMs, parent.not_after.getTime()));
  if (notAfter.getTime() <= now.getTime() + 86_400_000)
    throw new KeywardError(
      'conflict',
      `root ${parent.id} expires at ${parent.not_after.toISOString()}; rotate the root first`,
    );

  const key = await deps.kms.createKey(trx, {
    usage: 'intermediate',
    alg: spec.keyType,
    principal,
    ...(spec.protection ? { protection: spec.protection } : {}),
  });
  const rootSigner = await deps.kms.signer(parentKey, 'sign-certificate', principal, trx);
  const der = await buildSubordinateCa(
    {
      serial: Buffer.from(randomSerial(), 'hex'),
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter,
      subject: { commonName: spec.commonName, organization: deps.organization },
      subjectPublicKeyInfo: new Uint8Array(key.publicKey.export({ type: 'spki', format: 'der' })),
      pathLength: 0,
      nameConstraints: spec.nameConstraints,
    },
    { certificate: parent.certificate, signer: rootSigner },
  );
  const row = await insertIssuer(trx, {
    kind: 'intermediate',
    parentId: parent.id,
    keyId: key.id,
    der,
    state: opts.state,
    profiles: spec.profiles ?? [],
    ...(opts.replaces ? { replaces: opts.replaces } : {}),
  });
  // During a root rollover, every other root still trusted certifies the new intermediate too, so
  // clients that trust only an older root validate its leaves (chains.ts offers that path).
  for (const other of rows) {
    if (other.kind !== 'root' || other.id === parent.id || other.state === 'retired' || !holdsKey(other)) continue;
    if (other.not_after.getTime() <= now.getTime()) continue;
    const otherSigner = await deps.kms.signer(issuerKey(other), 'sign-certificate', principal, trx);
    await crossCertify(trx, row, other, otherSigner, now);
  }
  await deps.kms.audit.append(trx, {
    principal,
    action: 'add-issuer',
    keyId: key.id,
    outcome: 'success',
    context: {
      issuer: row.id,
      parent: parent.id,
      state: row.state,
      profiles: (spec.profiles ?? []).join(',') || '(default)',
      protection: key.protection,
      ...(opts.replaces ? { replaces: opts.replaces } : {}),
    },
  });
  return row;
}

export async function setState(
  deps: IssuerLifecycleDeps,
  trx: Executor,
  row: IssuerRow,
  state: IssuerState,
  principal: string,
): Promise<IssuerRow> {
  const updated = await trx
    .updateTable('issuers')
    .set({ state, state_changed_at: sql<Date>`now()` })
    .where('id', '=', row.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  await announceIssuerChange(trx, row.id);
  await deps.kms.audit.append(trx, {
    principal,
    action: 'issuer-state',
    keyId: row.key_id,
    outcome: 'success',
    context: { issuer: row.id, from: row.state, to: state },
  });
  return updated;
}

/** Runs a change in one transaction, then drops this process's cached issuers at once. */
export async function change<T>(
  deps: IssuerLifecycleDeps,
  fn: (trx: Executor, rows: IssuerRow[]) => Promise<T>,
): Promise<T> {
  try {
    return await deps.db.transaction().execute(async (trx) => fn(trx, await lockIssuers(trx)));
  } finally {
    deps.registry.forget();
  }
}

/** `ca add-intermediate`: a new intermediate, pending unless `activate` (then it signs at once). */
export function addIntermediate(
  deps: IssuerLifecycleDeps,
  spec: IntermediateSpec,
  principal: string,
  activate = false,
): Promise<IssuerRow> {
  checkProfiles(deps, spec.profiles ?? []);
  return change(deps, (trx, rows) =>
    makeIntermediate(deps, trx, rows, spec, principal, { state: activate ? 'active' : 'pending' }),
  );
}

/** `ca activate`: a pending (or retiring) intermediate signs its profiles from now on. */
export function activateIssuer(deps: IssuerLifecycleDeps, id: string, principal: string): Promise<IssuerRow> {
  return change(deps, async (trx, rows) => {
    const row = find(rows, id);
    if (row.state === 'active') return row;
    if (row.kind !== 'intermediate')
      throw new KeywardError('usage', `issuer ${id} is a root; roots change with ca rotate-root`);
    if (row.state === 'retired') throw new KeywardError('conflict', `issuer ${id} is retired and cannot sign again`);
    if (row.not_after.getTime() <= (deps.clock ?? systemClock).now().getTime())
      throw new KeywardError('conflict', `issuer ${id} expired at ${row.not_after.toISOString()}`);
    return setState(deps, trx, row, 'active', principal);
  });
}

/**
 * `ca retire`: the issuer signs nothing new; while certificates it issued are unexpired it stays
 * `retiring` and keeps answering CRL and OCSP for them, after that (or at once, with none) `retired`.
 */
export function retireIssuer(deps: IssuerLifecycleDeps, id: string, principal: string): Promise<IssuerRow> {
  return change(deps, async (trx, rows) => {
    const row = find(rows, id);
    if (row.state === 'retired') return row;
    if (row.kind === 'root') return retireRoot(deps, trx, rows, row, principal);
    const live = await trx
      .selectFrom('certificates')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('issuer_id', '=', id)
      .where('not_after', '>', sql<Date>`now()`)
      .executeTakeFirstOrThrow();
    const next: IssuerState = Number(live.n) > 0 ? 'retiring' : 'retired';
    if (row.state === next) return row;
    checkEveryProfileServed(
      deps,
      rows.map((r) => (r.id === id ? { ...r, state: next } : r)),
      `retiring ${id}`,
    );
    return setState(deps, trx, row, next, principal);
  });
}

/**
 * A root is retired after a rollover, once nothing that signs still chains only to it: it leaves
 * /roots.pem and the trust bundle, and its cross-certificates stop being offered.
 */
async function retireRoot(
  deps: IssuerLifecycleDeps,
  trx: Executor,
  rows: IssuerRow[],
  root: IssuerRow,
  principal: string,
): Promise<IssuerRow> {
  // A root trusted without its key (ca adopt --trust) is never the current one.
  if (root.state === 'active' && holdsKey(root))
    throw new KeywardError('conflict', `root ${root.id} is the current root; roll it over first (ca rotate-root)`);
  const children = rows.filter((r) => r.parent_id === root.id && (r.state === 'active' || r.state === 'pending'));
  if (children.length)
    throw new KeywardError(
      'conflict',
      `intermediate ${children.map((c) => c.id).join(', ')} under root ${root.id} still signs; rotate it (ca rotate-intermediate) first`,
    );
  return setState(deps, trx, root, 'retired', principal);
}

/**
 * `ca rotate-intermediate`: a new key and certificate under the same root that takes over the old
 * issuer's profiles at once; the old one turns `retiring` (its certificates stay valid and checked).
 */
export function rotateIntermediate(
  deps: IssuerLifecycleDeps,
  id: string,
  overrides: RotationOverrides,
  principal: string,
): Promise<{ old: IssuerRow; new: IssuerRow }> {
  return change(deps, (trx, rows) => rotateLocked(deps, trx, rows, id, overrides, principal));
}

export type RotationOverrides = Partial<Pick<IntermediateSpec, 'keyType' | 'lifetimeMs' | 'commonName' | 'protection'>>;

/**
 * The root a rotation puts the new intermediate under: the old one's while it is active; after a
 * root rollover, the current root. An adopted intermediate under a root whose key we don't hold
 * moves to our current root.
 */
export function rotationParent(rows: readonly IssuerRow[], old: IssuerRow): IssuerRow | undefined {
  return rows.find((r) => r.id === old.parent_id && r.state === 'active' && holdsKey(r)) ?? currentRoot(rows);
}

/** A rotation inside a `change` (the caller holds the issuers lock and passes the rows it read). */
export async function rotateLocked(
  deps: IssuerLifecycleDeps,
  trx: Executor,
  rows: IssuerRow[],
  id: string,
  overrides: RotationOverrides,
  principal: string,
): Promise<{ old: IssuerRow; new: IssuerRow }> {
  const old = find(rows, id);
  if (old.kind !== 'intermediate') throw new KeywardError('usage', `issuer ${id} is a root; use ca rotate-root`);
  if (old.state !== 'active' && old.state !== 'pending')
    throw new KeywardError('conflict', `issuer ${id} is ${old.state}; only an active or pending issuer is rotated`);
  const key = await trx
    .selectFrom('kms_keys')
    .select(['alg', 'backend'])
    .where('id', '=', issuerKey(old))
    .executeTakeFirstOrThrow();
  const made = await makeIntermediate(
    deps,
    trx,
    rows,
    {
      parentId: rotationParent(rows, old)?.id,
      keyType: overrides.keyType ?? (key.alg as CaKeyType),
      lifetimeMs: overrides.lifetimeMs ?? old.not_after.getTime() - old.not_before.getTime(),
      commonName: overrides.commonName ?? commonNameOf(old.subject),
      nameConstraints: nameConstraintsSpecOf(old.certificate),
      profiles: old.profiles,
      protection: overrides.protection ?? key.backend,
    },
    principal,
    { state: old.state, replaces: old.id },
  );
  // A pending issuer never signed anything, so it has nothing to answer for.
  const after = await setState(deps, trx, old, old.state === 'active' ? 'retiring' : 'retired', principal);
  return { old: after, new: made };
}

function commonNameOf(subject: string): string {
  return /(?:^|,\s*)CN=([^,]+)/.exec(subject)?.[1] ?? 'Keyward Intermediate CA';
}
