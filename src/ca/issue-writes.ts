import { type RawBuilder, sql } from 'kysely';

import { GroupCommit } from '../db/group-commit.ts';
import { precompiled, precompiledByParts } from '../db/precompiled.ts';
import type { Db, Executor } from '../db/schema.ts';
import type { AttachedWrites } from '../kms/index.ts';

/** A serial to reserve before signing: what will be signed (the TBS) and for whom. */
export interface Reservation {
  serial: string;
  issuerId: string;
  profile: string;
  requester: string;
  /** JSON text: the TBSCertificate (base64) and the subject key's SHA-256. */
  request: string;
  spkiSha256: Buffer;
}

/** A signed certificate to record (its reservation turns `issued` with it). */
export interface Recorded {
  serial: string;
  issuerId: string;
  der: Uint8Array;
  commonName: string | null;
  /** JSON text of the SAN set. */
  sans: string;
  notBefore: Date;
  notAfter: Date;
  profile: string;
  spkiSha256: Buffer;
  requester: string;
  crlShard: number;
}

/**
 * The certificates of serial-first issuance, group-committed: certificates that concurrent issues
 * record while a batch is being written go together in the next statement, so N signers cost one
 * round trip and one commit. Each statement is atomic: a certificate is recorded with its
 * reservation's status or not at all. (Reservations go with their key uses' audit events:
 * reservationsWithAudit.)
 */
export class IssueWrites {
  private readonly records: GroupCommit<Recorded, void>;
  /** One group per list of writers (compared by identity): a batch's statement has one text. */
  private readonly linked: { writers: RecordWrites<unknown>[]; group: GroupCommit<LinkedRecord, LinkedRow[]> }[] = [];

  constructor(private readonly db: Db) {
    this.records = new GroupCommit((items) => recordBatch(db, items));
  }

  record(r: Recorded): Promise<void> {
    return this.records.submit(r);
  }

  /**
   * Records a certificate with the caller's bookkeeping (see RecordWrites), group-committed: the
   * certificate, its reservation turning `issued` and the writers' rows commit in one statement,
   * the certificate only if `linked`'s writer links it. Answers the rows that link it (none: it
   * was not recorded).
   */
  recordLinked(r: Recorded, linked: RecordWith, also: readonly RecordWith[] = []): Promise<LinkedRow[]> {
    const writers = [linked.writer, ...also.map((a) => a.writer)];
    let entry = this.linked.find(
      (e) => e.writers.length === writers.length && e.writers.every((w, i) => w === writers[i]),
    );
    if (!entry) {
      entry = { writers, group: new GroupCommit((batch) => recordLinkedBatch(this.db, writers, batch)) };
      this.linked.push(entry);
    }
    return entry.group.submit({ record: r, items: [linked.item, ...also.map((a) => a.item)] });
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Reserves serials in one statement (in the caller's transaction when `db` is one). */
export async function reserveBatch(db: Executor, items: Reservation[]): Promise<boolean[]> {
  // The blocked-key check and the reservation in one statement: no reservation for a blocked key.
  const { rows } = await sql<{ serial: string }>`
    INSERT INTO serial_reservations (serial, issuer_id, profile, requester, request)
    SELECT r.serial, r.issuer_id, r.profile, r.requester, r.request::jsonb
    FROM unnest(${items.map((i) => i.serial)}::text[], ${items.map((i) => i.issuerId)}::text[],
      ${items.map((i) => i.profile)}::text[], ${items.map((i) => i.requester)}::text[],
      ${items.map((i) => i.request)}::text[], ${items.map((i) => hex(i.spkiSha256))}::text[])
      AS r (serial, issuer_id, profile, requester, request, spki)
    WHERE NOT EXISTS (SELECT 1 FROM blocked_keys WHERE spki_sha256 = decode(r.spki, 'hex'))
    RETURNING serial`.execute(db);
  const reserved = new Set(rows.map((r) => r.serial));
  return items.map((i) => reserved.has(i.serial));
}

/** Whether a subject key may no longer be certified (its certificate was revoked for keyCompromise). */
export async function isBlocked(db: Executor, spkiSha256: Buffer): Promise<boolean> {
  const row = await db
    .selectFrom('blocked_keys')
    .select('spki_sha256')
    .where('spki_sha256', '=', spkiSha256)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Reservations written by the statement that appends their signatures' audit events (see
 * Signer.authorize): the serial, the TBS and the authorised key use commit together, one flushed
 * commit for a batch of concurrent issues, before anything is signed. A subject key blocked after
 * keyCompromise vetoes its item: nothing of it is written and the batch goes again without it.
 */
export const reservationsWithAudit: AttachedWrites<Reservation, ReservationColumns> = {
  name: 'reservation',
  parameters: (items) => [
    items.map((i) => hex(i.spkiSha256)),
    items.map((i) => i.serial),
    items.map((i) => i.issuerId),
    items.map((i) => i.profile),
    items.map((i) => i.requester),
    items.map((i) => i.request),
  ],
  vetoes: (spki) => sql`
    SELECT (r.n - 1)::int AS i FROM unnest(${spki}::text[]) WITH ORDINALITY AS r (spki, n)
    WHERE EXISTS (SELECT 1 FROM blocked_keys WHERE spki_sha256 = decode(r.spki, 'hex'))`,
  writes: (appended, _spki, serial, issuerId, profile, requester, request) => sql`
    INSERT INTO serial_reservations (serial, issuer_id, profile, requester, request)
    SELECT r.serial, r.issuer_id, r.profile, r.requester, r.request::jsonb
    FROM unnest(${serial}::text[], ${issuerId}::text[], ${profile}::text[], ${requester}::text[], ${request}::text[])
      AS r (serial, issuer_id, profile, requester, request)
    WHERE ${appended}`,
};

/** A batch of reservations as the audit statement's values: subject key (hex), serial, issuer, profile, requester, request. */
type ReservationColumns = [string[], string[], string[], string[], string[], string[]];

/** A reservation with the caller's claim on what it is for (see IssueRequest.reserveWith). */
export interface ClaimedReservation<C> {
  reservation: Reservation;
  claim: C;
}

const claiming = new WeakMap<AttachedWrites<never>, AttachedWrites<ClaimedReservation<never>>>();

/**
 * Reservations written together with the caller's claims (an ACME order turning processing): the
 * claim, the serial and the key use commit in one statement or not at all. An item is vetoed if
 * its key is blocked or its claim's own veto says the thing claimed is gone or taken. One writer
 * per claim writer, so the audit statement's text is compiled once for each.
 */
export function claimingReservations<C>(claims: AttachedWrites<C>): AttachedWrites<ClaimedReservation<C>> {
  const key = claims as AttachedWrites<never>;
  let writer = claiming.get(key);
  if (!writer) {
    const own = reservationsWithAudit;
    const split = (params: unknown[]) => [params.slice(0, 6) as ReservationColumns, params.slice(6)] as const;
    writer = {
      name: `${own.name}_${claims.name}`,
      parameters: (items) => [
        ...own.parameters(items.map((i) => i.reservation)),
        ...claims.parameters(items.map((i) => i.claim as C)),
      ],
      vetoes: (...params) => {
        const [mine, theirs] = split(params);
        return sql`${own.vetoes(...mine)} UNION ${claims.vetoes(...theirs)}`;
      },
      writes: (appended, ...params) => {
        const [mine, theirs] = split(params);
        return [own.writes(appended, ...mine), claims.writes(appended, ...theirs)].flat();
      },
    };
    claiming.set(key, writer);
  }
  return writer as AttachedWrites<ClaimedReservation<C>>;
}

/** Records certificates in one statement (in the caller's transaction when `db` is one). */
export async function recordBatch(db: Executor, items: Recorded[]): Promise<void[]> {
  await recordStatement(db, ...recordedColumns(items));
  return items.map(() => undefined);
}

// Built and compiled once (db/precompiled.ts), like the statements below.
const recordStatement = precompiled((db, ...columns: RecordedColumns) =>
  sql`
    WITH c AS (${recordedRows(columns)}),
    reservation AS (
      UPDATE serial_reservations SET status = 'issued' WHERE serial = ANY(${columns[0]}::text[]))
    INSERT INTO certificates (serial, issuer_id, der, common_name, sans, not_before, not_after, profile, spki_sha256,
      requester, crl_shard)
    SELECT serial, issuer_id, decode(der, 'hex'), common_name, sans, not_before, not_after, profile, decode(spki, 'hex'),
      requester, crl_shard
    FROM c`.compile(db),
);

/** A certificate's item for a `RecordWrites` writer: its serial and what the caller gave. */
export interface LinkedItem<C> {
  serial: string;
  item: C;
}

/**
 * The caller's bookkeeping written by the statement that records certificates (an ACME order
 * turning valid, the per-name counts), group-committed across concurrent issues: like
 * `AttachedWrites`, fixed SQL over arrays with an element per item, compiled once per process for
 * each list of writers.
 */
export interface RecordWrites<C, P extends unknown[] = unknown[]> {
  /** Names the writer's CTE (an SQL identifier, unique per writer). */
  readonly name: string;
  parameters(items: readonly LinkedItem<C>[]): P;
  /**
   * The CTE body. For `recordWith`'s writer, the write that links each certificate: an UPDATE …
   * RETURNING whose rows carry the serial they link as `linked_serial`; a certificate is recorded
   * only if a row links it. For `recordAlso`'s, writes only for the items whose serial is among
   * `linked` (a subquery of serials).
   */
  body(linked: RawBuilder<unknown>, ...params: P): RawBuilder<unknown>;
}

/** A writer and this certificate's item for it. */
export interface RecordWith<C = unknown> {
  writer: RecordWrites<C>;
  item: C;
}

interface LinkedRecord {
  record: Recorded;
  /** One item per writer of the group, in its order. */
  items: unknown[];
}

/** Rows that link a certificate: what `recordWith`'s writer returned for it. */
type LinkedRow = Record<string, unknown> & { linked_serial: string };

async function recordLinkedBatch(
  db: Executor,
  writers: readonly RecordWrites<unknown>[],
  batch: readonly LinkedRecord[],
): Promise<LinkedRow[][]> {
  const parts = writers.map((writer, k) => ({
    key: writer,
    values: writer.parameters(batch.map((b) => ({ serial: b.record.serial, item: b.items[k] }))),
  }));
  const rows = await linkedStatement(db, parts, ...recordedColumns(batch.map((b) => b.record)));
  const bySerial = new Map<string, LinkedRow[]>();
  for (const row of rows) {
    const list = bySerial.get(row.linked_serial);
    if (list) list.push(row);
    else bySerial.set(row.linked_serial, [row]);
  }
  return batch.map((b) => bySerial.get(b.record.serial) ?? []);
}

const linkedStatement = precompiledByParts<RecordWrites<unknown>, RecordedColumns, LinkedRow>(
  (db, [linked, ...also], ...columns) => {
    const serials = sql`(SELECT linked_serial FROM linked)`;
    const extra = also.map(
      (w, i) => sql`${sql.id(`also_${i}_${w.key.name}`)} AS (${w.key.body(serials, ...w.standIns)}),`,
    );
    return sql<LinkedRow>`
      WITH linked AS (${linked!.key.body(sql`NULL`, ...linked!.standIns)}),
      ${extra.length > 0 ? sql.join(extra, sql` `) : sql``}
      c AS (${recordedRows(columns)}),
      reservation AS (
        UPDATE serial_reservations SET status = 'issued' WHERE serial IN ${serials}),
      ins AS (
        INSERT INTO certificates (serial, issuer_id, der, common_name, sans, not_before, not_after, profile, spki_sha256,
          requester, crl_shard)
        SELECT serial, issuer_id, decode(der, 'hex'), common_name, sans, not_before, not_after, profile, decode(spki, 'hex'),
          requester, crl_shard
        FROM c WHERE serial IN ${serials})
      SELECT * FROM linked`.compile(db);
  },
);

/** Certificates to record as column arrays (so the text is the same for any count), in recordedRows' order. */
type RecordedColumns = [
  serial: string[],
  issuerId: string[],
  der: string[],
  commonName: (string | null)[],
  sans: string[],
  notBefore: string[],
  notAfter: string[],
  profile: string[],
  spki: string[],
  requester: string[],
  crlShard: number[],
];

function recordedColumns(items: readonly Recorded[]): RecordedColumns {
  return [
    items.map((i) => i.serial),
    items.map((i) => i.issuerId),
    items.map((i) => hex(i.der)),
    items.map((i) => i.commonName),
    items.map((i) => i.sans),
    items.map((i) => i.notBefore.toISOString()),
    items.map((i) => i.notAfter.toISOString()),
    items.map((i) => i.profile),
    items.map((i) => hex(i.spkiSha256)),
    items.map((i) => i.requester),
    items.map((i) => i.crlShard),
  ];
}

function recordedRows([
  serial,
  issuerId,
  der,
  commonName,
  sans,
  notBefore,
  notAfter,
  profile,
  spki,
  requester,
  crlShard,
]: RecordedColumns) {
  return sql`
      SELECT * FROM unnest(${serial}::text[], ${issuerId}::text[], ${der}::text[], ${commonName}::text[],
        ${sans}::jsonb[], ${notBefore}::timestamptz[], ${notAfter}::timestamptz[], ${profile}::text[],
        ${spki}::text[], ${requester}::text[], ${crlShard}::smallint[])
        AS c (serial, issuer_id, der, common_name, sans, not_before, not_after, profile, spki, requester, crl_shard)`;
}
