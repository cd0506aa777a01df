import { type RawBuilder, sql } from 'kysely';

import type { Executor } from '../db/schema.ts';

export type RateLimitName = 'newOrdersPerAccount' | 'certificatesPerName' | 'failedValidationsPerAccount';

/** One limit: at most `limit` hits per `windowMs` per key; limit 0 means unlimited. */
export interface RateLimitRule {
  name: string;
  limit: number;
  windowMs: number;
}

export type RateLimitResult =
  { ok: true; remaining: number } | { ok: false; retryAfterSeconds: number; limit: number; windowMs: number };

/** The `rateLimits` configuration section (windows already in milliseconds). */
export type RateLimitSettings = Record<RateLimitName, { limit: number; window: number }>;

/**
 * Counts one hit of `key` against `rule`, atomically in the database so that every replica shares
 * the count: a single INSERT ... ON CONFLICT DO UPDATE ... WHERE, which PostgreSQL evaluates under
 * the row lock. Fixed windows: a window starts with the first hit after the previous one ended.
 * `now` comes from the caller's clock (tests inject one).
 */
export async function consume(db: Executor, rule: RateLimitRule, key: string, now: Date): Promise<RateLimitResult> {
  if (rule.limit <= 0) return { ok: true, remaining: Number.POSITIVE_INFINITY };
  const row = await sql<{ count: number }>`${countHit(rule, key, now)}`.execute(db);
  const count = row.rows[0]?.count;
  if (count !== undefined) return { ok: true, remaining: rule.limit - Number(count) };
  return refused(db, rule, key, now);
}

/**
 * The counting statement of `consume`, for use as a CTE inside a caller's statement: it returns
 * one row (the new count) when the hit counted, none when the key is over its limit or the rule
 * is switched off, or when `when` (a condition over the caller's CTEs) is false.
 */
export function countHit(
  rule: RateLimitRule,
  key: string,
  now: Date,
  when: RawBuilder<boolean> = sql<boolean>`true`,
): RawBuilder<unknown> {
  const cutoff = new Date(now.getTime() - rule.windowMs);
  return sql`
    INSERT INTO rate_limit_counters AS c (name, key, window_start, count)
    SELECT ${rule.name}, ${key}, ${now}::timestamptz, 1 WHERE ${rule.limit > 0}::bool AND ${when}
    ON CONFLICT (name, key) DO UPDATE SET
      window_start = CASE WHEN c.window_start <= ${cutoff} THEN ${now} ELSE c.window_start END,
      count = CASE WHEN c.window_start <= ${cutoff} THEN 1 ELSE c.count + 1 END
    WHERE c.window_start <= ${cutoff} OR c.count < ${rule.limit}
    RETURNING c.count`;
}

/**
 * One hit for each of `keys` against `rule`, as a CTE for a caller's statement (the statement that
 * spends what the hits pay for). Rows come back for the keys that counted. `strict`: a key at its
 * limit is not counted (the caller compares the rows with the keys and refuses); otherwise every
 * key counts, for callers that judged the limit from an earlier read (see `countersOf`).
 */
export function countHits(
  rule: RateLimitRule,
  keys: readonly string[],
  now: Date,
  options: { when?: RawBuilder<boolean>; strict: boolean },
): RawBuilder<unknown> {
  const when = options.when ?? sql<boolean>`true`;
  return countHitsText(...hitValues(rule, keys, now), { when, strict: options.strict });
}

/**
 * Hits for many requests in one statement, as a CTE body: `keys[i]` counted once for each `of[i]`
 * found in `counted` (an SQL query of the values `of` holds). Strict: a key whose hits would take
 * it over its limit is not counted (no row comes back for it); otherwise every key counts, for
 * callers that judged the limit from an earlier read. The rule's values are parameters, so the
 * text is the same for any rule and batch.
 */
export function countHitsOf(
  rule: HitsOfRule,
  keys: RawBuilder<unknown>,
  of: RawBuilder<unknown>,
  counted: RawBuilder<unknown>,
): RawBuilder<unknown> {
  // Sorted keys: concurrent statements lock the rows in one order, so they never deadlock.
  return sql`
    INSERT INTO rate_limit_counters AS c (name, key, window_start, count)
    SELECT ${rule.name}::text, k.key, ${rule.now}::timestamptz, count(*)
    FROM unnest(${keys}::text[], ${of}::text[]) AS k (key, of)
    WHERE ${rule.limit}::int > 0 AND k.of IN ${counted}
    GROUP BY k.key ORDER BY k.key
    ON CONFLICT (name, key) DO UPDATE SET
      window_start = CASE WHEN c.window_start <= ${rule.cutoff}::timestamptz THEN excluded.window_start ELSE c.window_start END,
      count = CASE WHEN c.window_start <= ${rule.cutoff}::timestamptz THEN excluded.count ELSE c.count + excluded.count END
    WHERE NOT ${rule.strict}::bool OR c.window_start <= ${rule.cutoff}::timestamptz
      OR c.count + excluded.count <= ${rule.limit}::int
    RETURNING c.key`;
}

/** A rule's values for `countHitsOf`, as SQL (parameters of a statement compiled once). */
export interface HitsOfRule {
  name: RawBuilder<unknown>;
  limit: RawBuilder<unknown>;
  now: RawBuilder<unknown>;
  /** The window's start for `now`: counters that started before it begin again. */
  cutoff: RawBuilder<unknown>;
  strict: RawBuilder<unknown>;
}

/** countHits' values: rule name, sorted unique keys, now, the window's cutoff, the limit, whether the rule is on. */
type HitValues = [name: string, keys: string[], now: Date, cutoff: Date, limit: number, on: boolean];

function hitValues(rule: RateLimitRule, keys: readonly string[], now: Date): HitValues {
  // Sorted keys: concurrent statements lock the rows in one order, so they never deadlock.
  const sorted = [...new Set(keys)].sort();
  return [rule.name, sorted, now, new Date(now.getTime() - rule.windowMs), rule.limit, rule.limit > 0];
}

function countHitsText(
  name: string,
  keys: string[],
  now: Date,
  cutoff: Date,
  limit: number,
  on: boolean,
  options: { when: RawBuilder<boolean>; strict: boolean },
): RawBuilder<unknown> {
  return sql`
    INSERT INTO rate_limit_counters AS c (name, key, window_start, count)
    SELECT ${name}, k.key, ${now}::timestamptz, 1 FROM unnest(${keys}::text[]) AS k (key)
    WHERE ${on}::bool AND ${options.when}
    ON CONFLICT (name, key) DO UPDATE SET
      window_start = CASE WHEN c.window_start <= ${cutoff} THEN ${now} ELSE c.window_start END,
      count = CASE WHEN c.window_start <= ${cutoff} THEN 1 ELSE c.count + 1 END
    WHERE NOT ${options.strict}::bool OR c.window_start <= ${cutoff} OR c.count < ${limit}
    RETURNING c.key`;
}

/** One counter as read for a decision: its hits since `windowStart`. */
export interface CounterReading {
  key: string;
  count: number;
  windowStart: Date;
}

/**
 * The counters of `keys` (an SQL text[] expression over the caller's rows) as a JSON array of
 * {key, count, windowStart}, for a caller that reads them along with its own row (one statement)
 * and judges them with `judgeCounters`.
 */
export function countersOf(ruleName: string, keys: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`(SELECT coalesce(json_agg(json_build_object('key', r.key, 'count', r.count, 'windowStart', r.window_start)), '[]')
    FROM rate_limit_counters r WHERE r.name = ${ruleName} AND r.key = ANY (${keys}))`;
}

/** The counters of `keys` on their own (one statement), for callers off a hot path. */
export async function readCounters(db: Executor, ruleName: string, keys: readonly string[]): Promise<CounterReading[]> {
  const rows = await db
    .selectFrom('rate_limit_counters')
    .select(['key', 'count', 'window_start'])
    .where('name', '=', ruleName)
    .where('key', 'in', keys.length > 0 ? [...keys] : [''])
    .execute();
  return rows.map((r) => ({ key: r.key, count: r.count, windowStart: r.window_start }));
}

/** Counters read as JSON (`countersOf`): timestamps arrive as text. */
export function parseCounters(json: unknown): CounterReading[] {
  if (!Array.isArray(json)) return [];
  return json.map((r: { key: string; count: number | string; windowStart: string | Date }) => ({
    key: r.key,
    count: Number(r.count),
    windowStart: new Date(r.windowStart),
  }));
}

/** The first key at its limit in `readings`, with when its window ends; undefined when all are under. */
export function judgeCounters(
  rule: RateLimitRule,
  readings: readonly CounterReading[],
  now: Date,
): (RateLimitResult & { ok: false; key: string }) | undefined {
  if (rule.limit <= 0) return undefined;
  const cutoff = now.getTime() - rule.windowMs;
  const full = readings
    .filter((r) => r.windowStart.getTime() > cutoff && r.count >= rule.limit)
    .sort((a, b) => a.key.localeCompare(b.key))[0];
  if (!full) return undefined;
  return {
    ok: false,
    key: full.key,
    retryAfterSeconds: Math.max(1, Math.ceil((full.windowStart.getTime() + rule.windowMs - now.getTime()) / 1000)),
    limit: rule.limit,
    windowMs: rule.windowMs,
  };
}

/** An SQL condition: true when `key` is under its limit now (a `peek` inside a caller's statement). */
export function underLimit(rule: RateLimitRule, key: string, now: Date): RawBuilder<boolean> {
  const cutoff = new Date(now.getTime() - rule.windowMs);
  return sql<boolean>`(${rule.limit <= 0}::bool OR NOT EXISTS (SELECT 1 FROM rate_limit_counters
    WHERE name = ${rule.name} AND key = ${key} AND window_start > ${cutoff} AND count >= ${rule.limit}))`;
}

/** Like consume, but counts nothing: for checks before work that only counts when it fails. */
export async function peek(db: Executor, rule: RateLimitRule, key: string, now: Date): Promise<RateLimitResult> {
  if (rule.limit <= 0) return { ok: true, remaining: Number.POSITIVE_INFINITY };
  const row = await db
    .selectFrom('rate_limit_counters')
    .select(['window_start', 'count'])
    .where('name', '=', rule.name)
    .where('key', '=', key)
    .executeTakeFirst();
  if (!row || row.window_start.getTime() <= now.getTime() - rule.windowMs) return { ok: true, remaining: rule.limit };
  if (row.count < rule.limit) return { ok: true, remaining: rule.limit - row.count };
  return refused(db, rule, key, now);
}

async function refused(db: Executor, rule: RateLimitRule, key: string, now: Date): Promise<RateLimitResult> {
  const row = await db
    .selectFrom('rate_limit_counters')
    .select('window_start')
    .where('name', '=', rule.name)
    .where('key', '=', key)
    .executeTakeFirst();
  const ends = (row?.window_start.getTime() ?? now.getTime()) + rule.windowMs;
  return {
    ok: false,
    retryAfterSeconds: Math.max(1, Math.ceil((ends - now.getTime()) / 1000)),
    limit: rule.limit,
    windowMs: rule.windowMs,
  };
}

/**
 * The configured limits by name. `consumeAll` is for limits counted per name of an order
 * (certificatesPerName): all keys count or none do, in one transaction.
 */
export class RateLimiter {
  constructor(private readonly settings: RateLimitSettings) {}

  rule(name: RateLimitName): RateLimitRule {
    const s = this.settings[name];
    return { name, limit: s.limit, windowMs: s.window };
  }

  consume(db: Executor, name: RateLimitName, key: string, now: Date): Promise<RateLimitResult> {
    return consume(db, this.rule(name), key, now);
  }

  peek(db: Executor, name: RateLimitName, key: string, now: Date): Promise<RateLimitResult> {
    return peek(db, this.rule(name), key, now);
  }

  /** The first refusal (with its key) when any key is over its limit; then nothing is counted. */
  async consumeAll(
    db: Executor,
    name: RateLimitName,
    keys: readonly string[],
    now: Date,
  ): Promise<RateLimitResult & { key?: string }> {
    const unique = [...new Set(keys)].sort(); // sorted: replicas lock rows in one order, no deadlock
    const rule = this.rule(name);
    const rollback = new Error('rate limited');
    let refusal: (RateLimitResult & { key: string }) | undefined;
    let remaining = Number.POSITIVE_INFINITY;
    try {
      await runInTransaction(db, async (trx) => {
        for (const key of unique) {
          const r = await consume(trx, rule, key, now);
          if (!r.ok) {
            refusal = { ...r, key };
            throw rollback;
          }
          remaining = Math.min(remaining, r.remaining);
        }
      });
    } catch (err) {
      if (err !== rollback) throw err;
    }
    return refusal ?? { ok: true, remaining };
  }
}

function runInTransaction(db: Executor, fn: (trx: Executor) => Promise<void>): Promise<void> {
  return db.isTransaction ? fn(db) : db.transaction().execute(fn);
}

/** Deletes counters whose window ended long ago (they would restart anyway). */
export async function pruneRateLimits(db: Executor, before: Date): Promise<number> {
  const r = await db.deleteFrom('rate_limit_counters').where('window_start', '<', before).executeTakeFirst();
  return Number(r.numDeletedRows);
}
