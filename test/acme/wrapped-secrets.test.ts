import { randomBytes } from 'node:crypto';

import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEab } from '../../src/acme/operator.ts';
import { nonceSecretLabel, secretBox, wrapPlaintextSecrets } from '../../src/acme/wrap-secrets.ts';
import type { Db } from '../../src/db/schema.ts';
import { type AcmeTestEnv, freshNonce, startAcmeEnv } from '../support/acme.ts';

/** Every row of the tables that could hold these secrets, as PostgreSQL prints them (bytea in hex). */
async function dump(db: Db): Promise<string> {
  const tables = ['acme_secrets', 'acme_eab_keys', 'audit_events', 'kms_kek_versions', 'kms_keys'];
  let out = '';
  for (const t of tables) {
    const r = await sql<{ row: string }>`SELECT t::text AS row FROM ${sql.table(t)} t`.execute(db);
    out += r.rows.map((x) => x.row).join('\n');
  }
  return out.toLowerCase();
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('secrets wrapped by the key hierarchy', () => {
  let env: AcmeTestEnv;

  beforeAll(async () => {
    env = await startAcmeEnv({ acme: { externalAccountRequired: true } });
  });
  afterAll(async () => env?.close());

  it('the database holds no plaintext of the EAB HMAC keys or the nonce MAC key, and both still work', async () => {
    const { ctx } = env.ca;
    const db = ctx.database.db;
    const eab = await createEab(db, ctx.kms, 'wrapped', 'test');
    const client = await env.client({ externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    await client.createAccount({ termsOfServiceAgreed: true });
    await freshNonce(env);

    const nonceRow = await db
      .selectFrom('acme_secrets')
      .selectAll()
      .where('name', '=', 'nonce-mac')
      .executeTakeFirstOrThrow();
    expect(nonceRow.wrapped).toBe(true);
    expect(Buffer.from(nonceRow.value).subarray(0, 4).toString()).toBe('KWE1');
    const nonceKey = await secretBox(ctx.kms).unwrap(db, nonceSecretLabel('nonce-mac'), nonceRow.value);
    expect(nonceKey).toHaveLength(32);

    const text = await dump(db);
    expect(text).not.toContain(hex(Buffer.from(eab.hmacKey, 'base64url')));
    expect(text).not.toContain(hex(nonceKey));
    expect(text).not.toContain(eab.hmacKey.toLowerCase());
  });

  it('rows stored in plaintext before are wrapped at start and keep working', async () => {
    const db = env.ca.ctx.database.db;
    const key = randomBytes(32);
    await db
      .insertInto('acme_eab_keys')
      .values({ key_id: 'kw_legacy', hmac_key: key, wrapped: false, label: 'from an older version' })
      .execute();
    expect(await wrapPlaintextSecrets(db, secretBox(env.ca.ctx.kms))).toBe(1);
    const row = await db
      .selectFrom('acme_eab_keys')
      .selectAll()
      .where('key_id', '=', 'kw_legacy')
      .executeTakeFirstOrThrow();
    expect(row.wrapped).toBe(true);
    expect(await dump(db)).not.toContain(hex(key));
    // A second pass (another replica starting) changes nothing.
    expect(await wrapPlaintextSecrets(db, secretBox(env.ca.ctx.kms))).toBe(0);

    const client = await env.client({
      externalAccountBinding: { kid: 'kw_legacy', hmacKey: key.toString('base64url') },
    });
    const account = await client.createAccount({ termsOfServiceAgreed: true });
    expect(account.status).toBe('valid');
  });

  it('a wrapped secret moved onto another row does not open', async () => {
    const { ctx } = env.ca;
    const db = ctx.database.db;
    const a = await createEab(db, ctx.kms, 'a', 'test');
    const b = await createEab(db, ctx.kms, 'b', 'test');
    const rowA = await db
      .selectFrom('acme_eab_keys')
      .select('hmac_key')
      .where('key_id', '=', a.keyId)
      .executeTakeFirstOrThrow();
    // A database writer copies a's wrapped key onto b: b's binding (made with b's key) fails, and
    // so does one made with a's key under b's id: the label binds each ciphertext to its key id.
    await db.updateTable('acme_eab_keys').set({ hmac_key: rowA.hmac_key }).where('key_id', '=', b.keyId).execute();
    const forged = await env.client({ externalAccountBinding: { kid: b.keyId, hmacKey: a.hmacKey } });
    await expect(forged.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow();
    const account = await db
      .selectFrom('acme_eab_keys')
      .select('account_id')
      .where('key_id', '=', b.keyId)
      .executeTakeFirstOrThrow();
    expect(account.account_id).toBeNull();
  });
});
