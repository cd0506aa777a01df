import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/schema.ts';
import type { AcmeClock } from './clock.ts';
import { B64URL } from './ids.ts';

const SECRET_NAME = 'nonce-mac';
const EXPIRY_BYTES = 6;
const RANDOM_BYTES = 16;
const MAC_BYTES = 16;
const NONCE_BYTES = EXPIRY_BYTES + RANDOM_BYTES + MAC_BYTES;

/**
 * Nonces carry their own expiry and a MAC under a secret shared through the database, so handing
 * one out (on every response) costs no write and any replica recognises another's. Spending one is
 * a single insert into the spent list, whose primary key makes a replay lose even when two replicas
 * see the same nonce at once.
 */
export class NonceService {
  private secret: Promise<Buffer> | undefined;

  constructor(
    private readonly db: Db,
    private readonly lifetimeMs: number,
    private readonly clock: AcmeClock,
  ) {}

  private key(): Promise<Buffer> {
    this.secret ??= (async () => {
      await this.db
        .insertInto('acme_secrets')
        .values({ name: SECRET_NAME, value: randomBytes(32) })
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
      const row = await this.db.selectFrom('acme_secrets').select('value').where('name', '=', SECRET_NAME).executeTakeFirstOrThrow();
      return Buffer.from(row.value);
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
    randomBytes(RANDOM_BYTES).copy(body, EXPIRY_BYTES);
    return Buffer.concat([body, this.mac(key, body)]).toString('base64url');
  }

  /** True when the nonce was ours, is unexpired and had not been spent; it is spent now. */
  async consume(nonce: string): Promise<boolean> {
    if (!B64URL.test(nonce) || nonce.length > 64) return false;
    const raw = Buffer.from(nonce, 'base64url');
    if (raw.length !== NONCE_BYTES || raw.toString('base64url') !== nonce) return false;
    const body = raw.subarray(0, EXPIRY_BYTES + RANDOM_BYTES);
    if (!timingSafeEqual(this.mac(await this.key(), body), raw.subarray(EXPIRY_BYTES + RANDOM_BYTES))) return false;
    const expires = new Date(body.readUIntBE(0, EXPIRY_BYTES) * 1000);
    if (expires <= this.clock.now()) return false;
    const row = await this.db
      .insertInto('acme_spent_nonces')
      .values({ nonce, expires_at: expires })
      .onConflict((oc) => oc.column('nonce').doNothing())
      .returning('nonce')
      .executeTakeFirst();
    return row !== undefined;
  }
}
