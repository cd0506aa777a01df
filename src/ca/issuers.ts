import { sql } from 'kysely';

import { KeywardError } from '../core/errors.ts';
import type { Listen } from '../db/notifications.ts';
import type { CrossCertificateRow, Db, Executor, IssuerRow } from '../db/schema.ts';

/** NOTIFY channel on which any change to the issuers table is announced (payload: the issuer id). */
export const ISSUERS_CHANNEL = 'keyward_issuers';

/** Sends the change notice in the caller's transaction, so replicas hear of it when it commits. */
export async function announceIssuerChange(trx: Executor, issuerId: string): Promise<void> {
  await sql`SELECT pg_notify(${ISSUERS_CHANNEL}, ${issuerId})`.execute(trx);
}

/**
 * Which issuer signs a profile: the active intermediate that names the profile, else the active
 * default one (naming no profile). Among several, the one activated last wins, so activating a new
 * issuer takes over at once and every replica makes the same choice from the same rows.
 */
export function chooseIssuer(rows: readonly IssuerRow[], profile: string): IssuerRow | undefined {
  const active = rows
    .filter((r) => r.kind === 'intermediate' && r.state === 'active')
    .sort((a, b) => b.state_changed_at.getTime() - a.state_changed_at.getTime() || b.id.localeCompare(a.id));
  return active.find((r) => r.profiles.includes(profile)) ?? active.find((r) => r.profiles.length === 0);
}

/**
 * The key an issuer signs with. Only a root trusted without its key (`ca adopt --trust`) has none;
 * it never signs here, so asking for its key is refused rather than passed on as null.
 */
export function issuerKey(row: Pick<IssuerRow, 'id' | 'key_id'>): string {
  if (row.key_id === null)
    throw new KeywardError(
      'conflict',
      `issuer ${row.id} is a root we trust without holding its key; it signs nothing here`,
    );
  return row.key_id;
}

/** Roots whose key we hold: the only ones that sign intermediates, cross-certificates and rollovers. */
export function holdsKey(row: Pick<IssuerRow, 'key_id'>): boolean {
  return row.key_id !== null;
}

/** The refusal when no issuer serves a profile (e.g. its only issuer was retired). */
export function noIssuerFor(profile: string): KeywardError {
  return new KeywardError(
    'notInitialized',
    `no active issuer signs profile "${profile}"; see \`keyward ca issuers\`, then \`keyward ca activate\` or \`keyward ca add-intermediate --profiles ${profile}\``,
  );
}

/**
 * The issuers table as every replica sees it. While notifications reach this process the rows are
 * kept in memory and dropped on each change (this replica's or another's); otherwise — the CLI, or
 * while the listening connection is down — each read is one query, so no replica ever acts on an
 * issuer state older than the last committed change it could have heard of.
 */
export class IssuerRegistry {
  private cached: Promise<IssuerRow[]> | undefined;
  private cachedCrosses: Promise<CrossCertificateRow[]> | undefined;
  private following = false;
  private readonly changeListeners = new Set<() => void>();

  constructor(private readonly db: Db) {}

  /**
   * Calls `fn` after every issuer change this replica hears of (and when it listens again after a
   * lost connection, which may have missed some); work that follows issuers, such as making a new
   * intermediate's OCSP signer and first CRL, starts then instead of at its next round.
   */
  onChange(fn: () => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  all(): Promise<IssuerRow[]> {
    if (!this.following) return this.load();
    this.cached ??= this.load();
    this.cached.catch(() => (this.cached = undefined));
    return this.cached;
  }

  /** Cross-certificates between roots (root rollover); cached like the issuers. */
  crossCertificates(): Promise<CrossCertificateRow[]> {
    const load = () => this.db.selectFrom('issuer_cross_certificates').selectAll().orderBy('created_at').execute();
    if (!this.following) return load();
    this.cachedCrosses ??= load();
    this.cachedCrosses.catch(() => (this.cachedCrosses = undefined));
    return this.cachedCrosses;
  }

  /** Drops the cached rows (after a change this process made, before its notice arrives). */
  forget(): void {
    this.cached = undefined;
    this.cachedCrosses = undefined;
  }

  async follow(listen: Listen): Promise<() => Promise<void>> {
    const changed = () => {
      this.forget();
      for (const fn of this.changeListeners) fn();
    };
    return listen(ISSUERS_CHANNEL, {
      message: changed,
      ready: () => {
        changed();
        this.following = true;
      },
      lost: () => {
        this.following = false;
        this.forget();
      },
    });
  }

  private load(): Promise<IssuerRow[]> {
    // A root and its first intermediate share a transaction and so a created_at: parents first.
    return this.db
      .selectFrom('issuers')
      .selectAll()
      .orderBy('created_at')
      .orderBy(sql`parent_id IS NOT NULL`)
      .orderBy('id')
      .execute();
  }
}

/** An issuer as `keyward ca issuers` shows it: the row plus its key and how much it has issued. */
export interface IssuerOverview {
  row: IssuerRow;
  /** null for a root trusted without its key (ca adopt --trust). */
  keyAlg: string | null;
  keyBackend: string | null;
  certificatesIssued: number;
  /** Unexpired certificates: while there are any, a retiring issuer keeps its CRLs and OCSP. */
  certificatesLive: number;
}

export async function issuerOverview(db: Db): Promise<IssuerOverview[]> {
  const { rows } = await sql<
    IssuerRow & { key_alg: string | null; key_backend: string | null; issued: string; live: string }
  >`
    SELECT i.*, k.alg AS key_alg, k.backend AS key_backend,
           coalesce(c.issued, 0) AS issued, coalesce(c.live, 0) AS live
    FROM issuers i
    LEFT JOIN kms_keys k ON k.id = i.key_id
    LEFT JOIN (SELECT issuer_id, count(*) AS issued, count(*) FILTER (WHERE not_after > now()) AS live
               FROM certificates GROUP BY issuer_id) c ON c.issuer_id = i.id
    ORDER BY i.created_at, i.parent_id IS NOT NULL, i.id`.execute(db);
  return rows.map(({ key_alg, key_backend, issued, live, ...row }) => ({
    row: row as IssuerRow,
    keyAlg: key_alg,
    keyBackend: key_backend,
    certificatesIssued: Number(issued),
    certificatesLive: Number(live),
  }));
}
