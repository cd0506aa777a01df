import { sql } from 'kysely';

import type { Db } from './schema.ts';

/**
 * A named lease in the database: at most one replica holds it until it expires. A replica that dies
 * simply stops renewing, and another takes over after `ttlMs`. Times come from the database clock.
 */
export async function acquireLease(db: Db, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const interval = `${Math.ceil(ttlMs)} milliseconds`;
  const row = await sql<{ holder: string }>`
    INSERT INTO leases (name, holder, expires_at) VALUES (${name}, ${holder}, now() + ${interval}::interval)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
      WHERE leases.holder = excluded.holder OR leases.expires_at < now()
    RETURNING holder`.execute(db);
  return row.rows.length === 1;
}

export async function releaseLease(db: Db, name: string, holder: string): Promise<void> {
  await db.deleteFrom('leases').where('name', '=', name).where('holder', '=', holder).execute();
}

/** Runs `fn` only while holding the lease; returns undefined when another replica holds it. */
export async function withLease<T>(
  db: Db,
  name: string,
  holder: string,
  ttlMs: number,
  fn: () => Promise<T>,
): Promise<T | undefined> {
  if (!(await acquireLease(db, name, holder, ttlMs))) return undefined;
  try {
    return await fn();
  } finally {
    await releaseLease(db, name, holder);
  }
}
