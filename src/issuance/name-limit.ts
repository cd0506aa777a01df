import { sql } from 'kysely';

import type { RecordWrites } from '../ca/issue-writes.ts';
import { KeywardError } from '../core/errors.ts';
import { identifiersOf, type SanSet } from '../core/identifiers.ts';
import type { Executor } from '../db/schema.ts';
import {
  type CounterReading,
  countHits,
  countHitsOf,
  judgeCounters,
  type RateLimitResult,
  type RateLimitRule,
  readCounters,
} from '../policy/index.ts';
import type { Requester } from './request.ts';

/** The front ends `rateLimits.certificatesPerName.appliesTo` can name. */
export type LimitedFrontEnd = 'acme' | 'mesh' | 'operator';

export interface NameLimitSettings {
  limit: number;
  window: number;
  appliesTo: readonly LimitedFrontEnd[];
}

/** What a decided request owes the certificates-per-name limit once it is issued. */
export interface NameCount {
  rule: RateLimitRule;
  /** Every name of the request, sorted and unique. */
  keys: string[];
}

function frontEndOf(requester: Requester): LimitedFrontEnd | undefined {
  switch (requester.kind) {
    case 'acme':
      return 'acme';
    case 'mesh-token':
    case 'mesh-renew':
      return 'mesh';
    case 'operator':
      return 'operator';
    case 'server':
      // The listener's own names, configured by the operator: never refused for being popular.
      return undefined;
  }
}

/** The counted names of a request when the limit applies to its front end, else undefined. */
export function nameCountFor(settings: NameLimitSettings, requester: Requester, sans: SanSet): NameCount | undefined {
  const frontEnd = frontEndOf(requester);
  if (settings.limit <= 0 || !frontEnd || !settings.appliesTo.includes(frontEnd)) return undefined;
  return {
    rule: { name: 'certificatesPerName', limit: settings.limit, windowMs: settings.window },
    keys: [...new Set(identifiersOf(sans).map((i) => i.value))].sort(),
  };
}

function refusal(result: RateLimitResult & { ok: false }, key: string): KeywardError {
  return new KeywardError(
    'rateLimited',
    `Certificates for ${key}: at most ${result.limit} per ${Math.round(result.windowMs / 1000)} s; retry after ${result.retryAfterSeconds} s`,
    { retryAfter: result.retryAfterSeconds },
  );
}

/**
 * Refuses with rateLimited and Retry-After when a name is at its limit. The counters are the
 * front end's reading (ACME reads them with the order) or read here (one statement, off the ACME
 * hot path).
 */
export async function checkNameCount(
  db: Executor,
  count: NameCount,
  gathered: readonly CounterReading[] | undefined,
  now: Date,
): Promise<void> {
  const readings = gathered ?? (await readCounters(db, count.rule.name, count.keys));
  const full = judgeCounters(count.rule, readings, now);
  if (full) throw refusal(full, full.key);
}

/** A certificate's names to count with its record, and when. */
export interface NamesToCount {
  keys: readonly string[];
  now: Date;
}

const recordWriters = new Map<string, RecordWrites<NamesToCount>>();

/**
 * The names' hits in the statement that records certificates (see IssuanceHooks), counted for
 * the certificates it records: one writer per rule, so a batch shares its rule.
 */
export function namesCountedWithRecord(rule: RateLimitRule): RecordWrites<NamesToCount> {
  const id = `${rule.name}/${rule.limit}/${rule.windowMs}`;
  let writer = recordWriters.get(id);
  if (!writer) {
    writer = {
      name: 'names_counted',
      parameters: (items) => {
        const now = new Date(Math.max(...items.map((i) => i.item.now.getTime())));
        return [
          rule.name,
          rule.limit,
          now,
          new Date(now.getTime() - rule.windowMs),
          items.flatMap((i) => i.item.keys),
          items.flatMap((i) => i.item.keys.map(() => i.serial)),
        ];
      },
      body: (linked, name, limit, now, cutoff, keys, of) =>
        countHitsOf(
          { name: sql`${name}`, limit: sql`${limit}`, now: sql`${now}`, cutoff: sql`${cutoff}`, strict: sql`false` },
          sql`${keys}`,
          sql`${of}`,
          linked,
        ),
    };
    recordWriters.set(id, writer);
  }
  return writer;
}

/**
 * Counts the names in the transaction that reserves the serial, for front ends that do not count
 * in a statement of their own. Strict: a name that reached its limit since the decision refuses,
 * and the transaction (reservation, spent token) rolls back.
 */
export async function countNamesStrictly(trx: Executor, count: NameCount, now: Date): Promise<void> {
  const { rows } = await sql<{
    key: string;
  }>`WITH counted AS (${countHits(count.rule, count.keys, now, { strict: true })})
    SELECT key FROM counted`.execute(trx);
  if (rows.length === count.keys.length) return;
  const counted = new Set(rows.map((r) => r.key));
  const key = count.keys.find((k) => !counted.has(k))!;
  const full = judgeCounters(count.rule, await readCounters(trx, count.rule.name, [key]), now);
  throw refusal(
    full ?? { ok: false, retryAfterSeconds: 1, limit: count.rule.limit, windowMs: count.rule.windowMs },
    key,
  );
}
