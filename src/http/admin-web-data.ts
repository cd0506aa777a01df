import { sql } from 'kysely';

import { normalizeSerial } from '../core/serial.ts';
import type { CertificateRow, Db } from '../db/schema.ts';

// What the admin web page (admin-web.tsx) reads that no command already answers: each a bounded
// query (LIMIT, a time window), since the page is served on the same listener as ACME.

export interface IssuedDay {
  day: string;
  count: number;
}

/** Certificates recorded per UTC day over the last `days` days, oldest first, zero days included. */
export async function issuedPerDay(db: Db, days = 14): Promise<IssuedDay[]> {
  const rows = await sql<{ day: string; count: number }>`
    SELECT to_char(d.day, 'YYYY-MM-DD') AS day, count(c.serial)::int AS count
    FROM generate_series(date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => ${days - 1}),
                         date_trunc('day', now() AT TIME ZONE 'UTC'), interval '1 day') AS d(day)
    LEFT JOIN certificates c
      ON c.created_at >= d.day AT TIME ZONE 'UTC' AND c.created_at < (d.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY d.day ORDER BY d.day`.execute(db);
  return rows.rows.map((r) => ({ day: r.day, count: Number(r.count) }));
}

export interface ValidationFailure {
  identifier: string;
  type: string;
  problem: string;
  detail: string;
  at: string | null;
}

/**
 * ACME challenges that failed for good, for authorizations created in the last 24 hours: how many,
 * and the newest few. A failed challenge has no time of its own (`validated` is when one turned
 * valid, RFC 8555 §8.1; done jobs are kept an hour), so the authorization's creation stands in.
 * Unindexed scans, bounded by the window: fine for a page a person loads, not for a hot path.
 */
export async function validationFailures(
  db: Db,
  limit = 10,
): Promise<{ last24h: number; recent: ValidationFailure[] }> {
  const rows = await sql<{
    identifier_value: string;
    type: string;
    error: { type?: string; detail?: string } | null;
    created_at: Date;
    total: number;
  }>`
    SELECT a.identifier_value, a.attempted AS type, a.attempt_error AS error, a.created_at, count(*) OVER ()::int AS total
    FROM acme_authzs a
    WHERE a.attempt_status = 'invalid' AND a.created_at > now() - interval '24 hours'
    ORDER BY a.created_at DESC LIMIT ${limit}`.execute(db);
  return {
    last24h: Number(rows.rows[0]?.total ?? 0),
    recent: rows.rows.map((r) => ({
      identifier: r.identifier_value,
      type: r.type,
      problem: (r.error?.type ?? '').replace('urn:ietf:params:acme:error:', ''),
      detail: r.error?.detail ?? '',
      at: new Date(r.created_at).toISOString(),
    })),
  };
}

export interface AuditHead {
  seq: number;
  lastCheckpoint: { seq: number; ts: string } | null;
}

export async function auditHead(db: Db): Promise<AuditHead> {
  const head = await db.selectFrom('audit_head').select('seq').executeTakeFirst();
  const cp = await db
    .selectFrom('audit_checkpoints')
    .select(['seq', 'ts'])
    .orderBy('seq', 'desc')
    .limit(1)
    .executeTakeFirst();
  return {
    seq: Number(head?.seq ?? 0),
    lastCheckpoint: cp ? { seq: Number(cp.seq), ts: new Date(cp.ts).toISOString() } : null,
  };
}

export type CertificateState = 'any' | 'valid' | 'revoked' | 'expired';
export const CERTIFICATE_STATES: readonly CertificateState[] = ['any', 'valid', 'revoked', 'expired'];

export interface CertificateQuery {
  /** A name (CN or SAN), serial or requester, matched as a substring, case-insensitively. */
  q?: string;
  state?: CertificateState;
  /** Only those expiring within this many days (and not yet expired). */
  expiringDays?: number;
  limit?: number;
}

const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The certificates page's search, newest first (at most `limit`, default 100). */
export async function searchCertificates(db: Db, query: CertificateQuery): Promise<CertificateRow[]> {
  let q = db
    .selectFrom('certificates')
    .selectAll()
    .orderBy('created_at', 'desc')
    .orderBy('serial')
    .limit(Math.min(query.limit ?? 100, 500));
  const text = query.q?.trim();
  if (text) {
    const like = `%${likeEscape(text)}%`;
    let serial: string | undefined;
    try {
      serial = /^[0-9a-fA-F:]+$/.test(text) ? normalizeSerial(text) : undefined;
    } catch {
      serial = undefined;
    }
    q = q.where((eb) =>
      eb.or([
        eb('common_name', 'ilike', like),
        eb(sql<string>`sans::text`, 'ilike', like),
        eb('requester', 'ilike', like),
        ...(serial ? [eb('serial', 'like', `%${likeEscape(serial)}%`)] : []),
      ]),
    );
  }
  if (query.state === 'valid') q = q.where('status', '=', 'valid').where('not_after', '>', sql<Date>`now()`);
  if (query.state === 'revoked') q = q.where('status', '=', 'revoked');
  if (query.state === 'expired') q = q.where('not_after', '<=', sql<Date>`now()`);
  if (query.expiringDays !== undefined)
    q = q
      .where('not_after', '>', sql<Date>`now()`)
      .where('not_after', '<=', sql<Date>`now() + make_interval(days => ${query.expiringDays})`);
  return q.execute();
}
