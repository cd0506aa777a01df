import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

import { sql } from 'kysely';

import type { Clock } from '../core/clock.ts';
import { randomBytesPooled } from '../core/random.ts';
import { GroupCommit } from '../db/group-commit.ts';
import { precompiled } from '../db/precompiled.ts';
import type { Db } from '../db/schema.ts';
import { accountById } from './account-store.ts';
import { B64URL } from './ids.ts';
import {
  type OptionalReads,
  optionalReadsOf,
  type ReadAlong,
  type ReadAlongRows,
  readAlongRows,
  readAlongSql,
} from './read-along.ts';
import { nonceSecretLabel, type SecretBox } from './wrap-secrets.ts';

const SECRET_NAME = 'nonce-mac';
const EXPIRY_BYTES = 6;
const RANDOM_BYTES = 16;
const MAC_BYTES = 16;
const NONCE_BYTES = EXPIRY_BYTES + RANDOM_BYTES + MAC_BYTES;

interface Spend extends ReadAlong {
  nonce: string;
  expires: Date;
  accountId: string | undefined;
}

export interface SpentNonce extends ReadAlongRows {
  /** False when the nonce had been spent before. */
  fresh: boolean;
}

// Arrays, not a VALUES list, so the statement's text (and its prepared plan) is the same for any
// batch size; built and compiled once (db/precompiled.ts) for each set of optional reads: every
// ACME POST runs one.
const spendStatement = (optional: OptionalReads) => {
  const { columns, joins } = readAlongSql(optional);
  return precompiled(
    (
      db,
      i: number[],
      nonces: string[],
      expires: string[],
      accountIds: (string | null)[],
      authzIds: (string | null)[],
      orderIds: (string | null)[],
      serials: (string | null)[],
    ) =>
      sql<Record<string, unknown> & { i: number; fresh: boolean }>`
        WITH req AS (
          SELECT * FROM unnest(${i}::int[], ${nonces}::text[], ${expires}::timestamptz[], ${accountIds}::text[],
            ${authzIds}::text[], ${orderIds}::text[], ${serials}::text[])
            AS r (i, nonce, expires, account_id, authz_id, order_id, certificate_serial)),
        spent AS (
          INSERT INTO acme_spent_nonces (nonce, expires_at) SELECT nonce, max(expires) FROM req GROUP BY nonce
          ON CONFLICT (nonce) DO NOTHING RETURNING nonce)
        SELECT req.i, spent.nonce IS NOT NULL AS fresh, ${columns}
        FROM req LEFT JOIN spent ON spent.nonce = req.nonce ${joins}`.compile(db),
  );
};
const spendStatements = new Map<string, ReturnType<typeof spendStatement>>();
function spendBatch(optional: OptionalReads): ReturnType<typeof spendStatement> {
  const key = `${optional.order}/${optional.gathered}/${optional.certificate}`;
  let statement = spendStatements.get(key);
  if (!statement) spendStatements.set(key, (statement = spendStatement(optional)));
  return statement;
}

/**
 * Nonces carry their own expiry and a MAC under a secret shared through the database, so handing
 * one out (on every response) costs no write and any replica recognises another's. Spending one is
 * an insert into the spent list, whose primary key makes a replay lose even when two replicas see
 * the same nonce at once. The spend also reads the requesting account (and what a POST-as-GET asks
 * for, acme/read-along.ts), and concurrent requests share one statement and one commit: every ACME
 * POST costs one round trip here, not two.
 *
 * Spends commit without waiting for the WAL flush (`spendDb` is the database's asyncCommit
 * connection): a request that changes anything commits its change after the spend, and PostgreSQL
 * flushes WAL in order, so that commit makes the spend durable before the client hears back. Only
 * a read-only POST-as-GET could have its spend lost, if PostgreSQL crashed within the WAL writer's
 * delay (200 ms by default) after it; replaying such a read within its nonce's lifetime shows the
 * requester nothing new.
 */
export class NonceService {
  private secret: Promise<Buffer> | undefined;
  private readonly spends: GroupCommit<Spend, SpentNonce>;

  constructor(
    private readonly db: Db,
    private readonly spendDb: Db,
    private readonly lifetimeMs: number,
    private readonly clock: Clock,
    private readonly secrets: SecretBox,
  ) {
    // No waiting for company: every request's first round trip is its spend, which batches well
    // without (at 8 clients waiting cost 40 % of the rate).
    this.spends = new GroupCommit((items) => this.spend(items), 500, 0);
  }

  private async spend(items: Spend[]): Promise<SpentNonce[]> {
    const rows = await spendBatch(optionalReadsOf(items))(
      this.spendDb,
      items.map((_, i) => i),
      items.map((s) => s.nonce),
      items.map((s) => s.expires.toISOString()),
      items.map((s) => s.accountId ?? null),
      items.map((s) => s.authzId ?? null),
      items.map((s) => s.orderId ?? null),
      items.map((s) => s.certificateSerial ?? null),
    );
    const out: SpentNonce[] = new Array(items.length);
    for (const row of rows) out[row.i] = { fresh: row.fresh, ...readAlongRows(row, items[row.i]!) };
    // The same nonce twice in one batch is inserted once: only its first use wins.
    const seen = new Set<string>();
    items.forEach((s, i) => {
      if (seen.has(s.nonce)) out[i]!.fresh = false;
      seen.add(s.nonce);
    });
    return out;
  }

  private key(): Promise<Buffer> {
    // Wrapped by the key hierarchy (src/kms/secrets.ts): the database alone can't forge nonces.
    // Whoever inserts first wins; every replica then unwraps the same key.
    this.secret ??= (async () => {
      const label = nonceSecretLabel(SECRET_NAME);
      const read = () =>
        this.db
          .selectFrom('acme_secrets')
          .select(['value', 'wrapped'])
          .where('name', '=', SECRET_NAME)
          .executeTakeFirst();
      let row = await read();
      if (!row) {
        const value = await this.secrets.wrap(this.db, label, randomBytes(32));
        await this.db
          .insertInto('acme_secrets')
          .values({ name: SECRET_NAME, value, wrapped: true })
          .onConflict((oc) => oc.column('name').doNothing())
          .execute();
        row = await read();
      }
      if (!row) throw new Error('the nonce MAC key could not be stored');
      // A row from before wrapping, until the server's start-up pass wraps it.
      return row.wrapped ? this.secrets.unwrap(this.db, label, row.value) : Buffer.from(row.value);
    })();
    this.secret.catch(() => (this.secret = undefined));
    return this.secret;
  }

  private mac(key: Buffer, body: Buffer): Buffer {
    return createHmac('sha256', key).update(body).digest().subarray(0, MAC_BYTES);
  }

  async issue(): Promise<string> {
    const key = await this.key();
    const body = Buffer.alloc(EXPIRY_BYTES + RANDOM_BYTES);
    body.writeUIntBE(Math.floor((this.clock.now().getTime() + this.lifetimeMs) / 1000), 0, EXPIRY_BYTES);
    randomBytesPooled(RANDOM_BYTES).copy(body, EXPIRY_BYTES);
    return Buffer.concat([body, this.mac(key, body)]).toString('base64url');
  }

  /**
   * Spends the nonce if it is ours and unexpired, and reads the account `accountId` (and the
   * authorization or order a POST-as-GET is about) in the same round trip. `fresh` is false for a
   * nonce that is not ours, expired or already spent; such a request fails, so nothing else is read.
   */
  async consume(nonce: string, accountId?: string, readAlong: ReadAlong = {}): Promise<SpentNonce> {
    const expires = await this.expiry(nonce);
    if (expires === undefined) {
      return { fresh: false, account: accountId === undefined ? undefined : await accountById(this.db, accountId) };
    }
    return this.spends.submit({ nonce, expires, accountId, ...readAlong });
  }

  /** When a nonce of ours expires; undefined if it is not ours or has expired. */
  private async expiry(nonce: string): Promise<Date | undefined> {
    if (!B64URL.test(nonce) || nonce.length > 64) return undefined;
    const raw = Buffer.from(nonce, 'base64url');
    if (raw.length !== NONCE_BYTES || raw.toString('base64url') !== nonce) return undefined;
    const body = raw.subarray(0, EXPIRY_BYTES + RANDOM_BYTES);
    if (!timingSafeEqual(this.mac(await this.key(), body), raw.subarray(EXPIRY_BYTES + RANDOM_BYTES))) return undefined;
    const expires = new Date(body.readUIntBE(0, EXPIRY_BYTES) * 1000);
    return expires > this.clock.now() ? expires : undefined;
  }
}
