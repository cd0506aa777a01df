import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';

export interface AuditListItem {
  seq: number;
  ts: string;
  principal: string;
  action: string;
  keyId: string | null;
  keyVersion: number | null;
  outcome: string;
  errorCode: string | null;
  context: Record<string, unknown>;
}

export interface AuditQuery {
  keyId?: string;
  /** An ISO time ("2025-01-01T00:00Z"). */
  since?: string;
  /** How far back from now, in milliseconds ("2h" ago). */
  sinceMs?: number;
  /** Only events before this seq: the cursor for paging back through a newest-first list. */
  before?: number;
  /** Newest first (a page a person reads) instead of oldest first (a log to follow). */
  newestFirst?: boolean;
  limit?: number;
}

/** Audit events (`audit list`, the admin page's audit view), at most `limit` (default 1000). */
export async function listAudit(db: Db, opts: AuditQuery): Promise<AuditListItem[]> {
  let q = db
    .selectFrom('audit_events')
    .selectAll()
    .orderBy('seq', opts.newestFirst ? 'desc' : 'asc')
    .limit(opts.limit ?? 1000);
  if (opts.keyId) q = q.where('key_id', '=', opts.keyId);
  if (opts.before !== undefined) q = q.where('seq', '<', opts.before);
  if (opts.since) q = q.where('ts', '>=', new Date(opts.since));
  if (opts.sinceMs !== undefined)
    q = q.where(sql<boolean>`ts >= now() - make_interval(secs => ${opts.sinceMs / 1000})`);
  const rows = await q.execute();
  return rows.map((r) => ({
    seq: Number(r.seq),
    ts: new Date(r.ts).toISOString(),
    principal: r.principal,
    action: r.action,
    keyId: r.key_id,
    keyVersion: r.key_version,
    outcome: r.outcome,
    errorCode: r.error_code,
    context: r.context,
  }));
}
