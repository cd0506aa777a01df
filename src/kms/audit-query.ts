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

/** `audit list`: events oldest first, by key and/or since a time ("2025-01-01T00:00Z" or "2h" ago). */
export async function listAudit(
  db: Db,
  opts: { keyId?: string; since?: string; sinceMs?: number; limit?: number },
): Promise<AuditListItem[]> {
  let q = db
    .selectFrom('audit_events')
    .selectAll()
    .orderBy('seq')
    .limit(opts.limit ?? 1000);
  if (opts.keyId) q = q.where('key_id', '=', opts.keyId);
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
