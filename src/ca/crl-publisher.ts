import { sql } from 'kysely';

import { events } from '../core/events.ts';
import { withLease } from '../db/lease.ts';
import type { Db, Executor, IssuerRow } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import { buildCrl, type CrlEntry } from './crl.ts';
import { issuerKey } from './issuers.ts';
import { crlUrl } from './revocation-urls.ts';

/**
 * Publishes CRLs: one per issuer and shard, stored in `crls` and served from there by any replica.
 *
 * Two mechanisms keep replicas from stepping on each other. A lease per (issuer, shard) means only
 * one replica does the work. The row lock on the `crls` row, held from reading the CRL number
 * until the new CRL is stored, makes the number strictly increasing even if a lease expired under a
 * slow publisher; and because `revokeCertificate` touches the same row, a revocation waits for a
 * publish in progress instead of slipping between "read the entries" and "clear stale_since".
 */

export interface CrlSettings {
  baseUrl: string;
  crlShards: number;
  crlValidity: number;
}

export interface CrlPublisherDeps {
  db: Db;
  kms: KeyHierarchy;
  settings: CrlSettings;
  /** Identifies this replica in leases. */
  holder: string;
  /** Principal for the KMS audit log. */
  principal: string;
}

export interface PublishedCrl {
  issuerId: string;
  shard: number;
  crlNumber: string;
  entries: number;
  /** Size of the DER CRL. */
  bytes: number;
  thisUpdate: string;
  nextUpdate: string;
  url: string;
}

/** Long enough for a million-entry shard; a replica that dies loses it after this. */
const LEASE_TTL_MS = 5 * 60_000;
const BATCH = 20_000;

/**
 * Revoked entries in compact columns (about 26 bytes each instead of a row object per entry), so a
 * shard with a million revocations costs tens of megabytes while it is being encoded.
 */
class EntryColumns {
  private serials = new Uint8Array(1 << 16);
  private serialEnd = 0;
  private lengths = new Uint8Array(1024);
  private times = new Float64Array(1024);
  private reasons = new Uint8Array(1024);
  count = 0;

  add(serialHex: string, revokedAt: Date, reason: number): void {
    const hex = serialHex.length % 2 === 1 ? `0${serialHex}` : serialHex;
    const n = hex.length / 2;
    if (this.count === this.lengths.length) {
      this.lengths = grow(this.lengths, this.count * 2);
      this.times = grow(this.times, this.count * 2);
      this.reasons = grow(this.reasons, this.count * 2);
    }
    if (this.serialEnd + n > this.serials.length)
      this.serials = grow(this.serials, Math.max(this.serials.length * 2, this.serialEnd + n));
    this.serials.set(Buffer.from(hex, 'hex'), this.serialEnd);
    this.serialEnd += n;
    this.lengths[this.count] = n;
    this.times[this.count] = revokedAt.getTime();
    this.reasons[this.count] = reason;
    this.count++;
  }

  *entries(): Generator<CrlEntry> {
    let off = 0;
    for (let i = 0; i < this.count; i++) {
      const n = this.lengths[i]!;
      yield {
        serialNumber: this.serials.subarray(off, off + n),
        revokedAt: new Date(this.times[i]!),
        reason: this.reasons[i]!,
      };
      off += n;
    }
  }
}

function grow<T extends Uint8Array | Float64Array>(a: T, size: number): T {
  const next = new (a.constructor as new (n: number) => T)(size);
  next.set(a);
  return next;
}

/** Revoked, unexpired certificates of one shard, walked in serial order through the partial index. */
async function collectEntries(db: Executor, issuerId: string, shard: number, at: Date): Promise<EntryColumns> {
  const out = new EntryColumns();
  let after = '';
  for (;;) {
    const rows = await db
      .selectFrom('certificates')
      .select(['serial', 'revoked_at', 'revocation_reason'])
      .where('issuer_id', '=', issuerId)
      .where('crl_shard', '=', shard)
      .where('status', '=', 'revoked')
      .where('serial', '>', after)
      // RFC 5280 5.1.2.6 lets an entry go once the certificate has expired; this keeps CRLs of
      // short-lived certificates small.
      .where('not_after', '>', at)
      .orderBy('serial')
      .limit(BATCH)
      .execute();
    for (const r of rows) out.add(r.serial, r.revoked_at ?? at, r.revocation_reason ?? 0);
    if (rows.length < BATCH) return out;
    after = rows[rows.length - 1]!.serial;
  }
}

/**
 * Publishes one shard's CRL now. Returns undefined when another replica holds the lease (it is
 * publishing this very CRL).
 */
export async function publishCrl(
  deps: CrlPublisherDeps,
  issuer: IssuerRow,
  shard: number,
): Promise<PublishedCrl | undefined> {
  const { db, settings } = deps;
  const started = performance.now();
  // Unwrap the issuer key (an audited event) before taking any lock, so that inside the transaction
  // the signature takes the key row and then the audit chain, in the order every signer does.
  await deps.kms.signer(issuerKey(issuer), 'sign-crl', deps.principal);
  const published = await withLease(db, `crl:${issuer.id}:${shard}`, deps.holder, LEASE_TTL_MS, () =>
    db.transaction().execute(async (trx) => {
      await trx
        .insertInto('crls')
        .values({
          issuer_id: issuer.id,
          shard,
          crl_number: 0,
          der: null,
          this_update: null,
          next_update: null,
          stale_since: null,
        })
        .onConflict((oc) => oc.columns(['issuer_id', 'shard']).doNothing())
        .execute();
      // clock_timestamp(), not now(): the lock may have been waited for, and thisUpdate must not be
      // earlier than the revocations the CRL lists.
      const locked = await sql<{ crl_number: string | number | bigint; now: Date }>`
        SELECT crl_number, date_trunc('second', clock_timestamp()) AS now FROM crls
        WHERE issuer_id = ${issuer.id} AND shard = ${shard} FOR UPDATE`.execute(trx);
      const row = locked.rows[0]!;
      const crlNumber = BigInt(row.crl_number) + 1n;
      const thisUpdate = new Date(row.now);
      const nextUpdate = new Date(thisUpdate.getTime() + settings.crlValidity);
      const entries = await collectEntries(trx, issuer.id, shard, thisUpdate);
      const signer = await deps.kms.signer(issuerKey(issuer), 'sign-crl', deps.principal, trx);
      const url = crlUrl(settings.baseUrl, issuer.id, shard);
      const der = await buildCrl({
        issuer: { certificate: issuer.certificate, signer },
        crlNumber,
        thisUpdate,
        nextUpdate,
        entries: entries.entries(),
        // A root's CRL lists CA certificates (ca sign-intermediate), so it may not claim user certs only.
        issuingDistributionPoint: { url, onlyContainsUserCerts: issuer.kind === 'intermediate' },
      });
      await trx
        .updateTable('crls')
        .set({
          crl_number: crlNumber.toString(),
          der,
          this_update: thisUpdate,
          next_update: nextUpdate,
          stale_since: null,
        })
        .where('issuer_id', '=', issuer.id)
        .where('shard', '=', shard)
        .execute();
      return {
        issuerId: issuer.id,
        shard,
        crlNumber: crlNumber.toString(),
        entries: entries.count,
        bytes: der.length,
        thisUpdate: thisUpdate.toISOString(),
        nextUpdate: nextUpdate.toISOString(),
        url,
      };
    }),
  );
  if (published)
    events.crlPublished.publish({
      issuerId: issuer.id,
      shard,
      entries: published.entries,
      bytes: published.bytes,
      seconds: (performance.now() - started) / 1000,
    });
  return published;
}

export interface DueShard {
  issuer: IssuerRow;
  shard: number;
}

/**
 * Shards whose CRL must be (re)published: never published, made stale by a revocation, or past
 * half of their validity (so a fresh CRL is always out well before nextUpdate). Shards beyond the
 * configured count stay on the list while they have a row, because their certificates never move.
 */
export async function dueShards(db: Db, settings: CrlSettings, opts: { force?: boolean } = {}): Promise<DueShard[]> {
  // Roots publish a CRL once they have certified a CA held elsewhere (ca sign-intermediate), so
  // that certificate can be revoked; shard 0 only.
  const issuers = await db
    .selectFrom('issuers')
    .selectAll()
    .where((eb) =>
      eb.or([
        eb('kind', '=', 'intermediate'),
        eb.and([
          eb('key_id', 'is not', null),
          eb.exists(eb.selectFrom('certificates as c').select('c.serial').whereRef('c.issuer_id', '=', 'issuers.id')),
        ]),
      ]),
    )
    .where('not_after', '>', sql<Date>`now()`)
    .where('state', '!=', 'retired')
    .orderBy('created_at')
    .execute();
  const rows = await sql<{ issuer_id: string; shard: number; published: boolean; stale: boolean; refresh: boolean }>`
    SELECT issuer_id, shard, der IS NOT NULL AS published, stale_since IS NOT NULL AS stale,
           coalesce(next_update < now() + ${`${Math.floor(settings.crlValidity / 2)} milliseconds`}::interval, true) AS refresh
    FROM crls`.execute(db);
  const due: DueShard[] = [];
  for (const issuer of issuers) {
    const known = new Map(rows.rows.filter((r) => r.issuer_id === issuer.id).map((r) => [Number(r.shard), r]));
    const shards = new Set<number>([...Array(issuer.kind === 'root' ? 1 : settings.crlShards).keys(), ...known.keys()]);
    for (const shard of [...shards].sort((a, b) => a - b)) {
      const r = known.get(shard);
      if (opts.force || !r || !r.published || r.stale || r.refresh) due.push({ issuer, shard });
    }
  }
  return due;
}

export interface PublishRound {
  published: PublishedCrl[];
  /** Shards another replica was publishing at the same moment. */
  busy: { issuerId: string; shard: number }[];
}

export async function publishDue(deps: CrlPublisherDeps, opts: { force?: boolean } = {}): Promise<PublishRound> {
  const round: PublishRound = { published: [], busy: [] };
  for (const { issuer, shard } of await dueShards(deps.db, deps.settings, opts)) {
    const result = await publishCrl(deps, issuer, shard);
    if (result) round.published.push(result);
    else round.busy.push({ issuerId: issuer.id, shard });
  }
  return round;
}
