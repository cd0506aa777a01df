import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, startAcmeEnv } from '../support/acme.ts';
import { cli } from '../support/cli.ts';

// The operator's view of ACME: which EAB keys and accounts exist, and ending one. The server runs
// throughout, so with the embedded database these commands go through its admin socket.
describe('keyward eab list|revoke, keyward acme accounts list|deactivate', () => {
  let env: AcmeTestEnv;
  const run = (args: string[]) => cli(args, env.ca.env, { context: env.ca.ctx });
  const json = async <T>(args: string[]): Promise<T> => {
    const r = await run([...args, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const createKey = (label: string) => json<{ keyId: string; hmacKey: string }>(['eab', 'create', '--label', label]);
  const register = async (key: { keyId: string; hmacKey: string }) => {
    const client = await env.client({ externalAccountBinding: { kid: key.keyId, hmacKey: key.hmacKey } });
    await client.createAccount({ termsOfServiceAgreed: true, contact: ['mailto:ops@example.test'] });
    return { client, id: client.getAccountUrl().split('/').pop()! };
  };

  beforeAll(async () => {
    env = await startAcmeEnv({ acme: { externalAccountRequired: true } });
  });
  afterAll(async () => env.close());

  it('lists keys by state without their HMAC keys, and a revoked key revokes the account it bound', async () => {
    const used = await createKey('payments');
    const spare = await createKey('spare');
    const { client, id } = await register(used);
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'pay.example.test' }] });

    const keys = await json<{ keyId: string; state: string; accountId: string | null; label: string }[]>([
      'eab',
      'list',
    ]);
    expect(keys).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ keyId: used.keyId, state: 'bound', accountId: id, label: 'payments' }),
        expect.objectContaining({ keyId: spare.keyId, state: 'unused', accountId: null }),
      ]),
    );
    const text = await run(['eab', 'list', '--state', 'unused']);
    expect(text.stdout).toContain(spare.keyId);
    expect(text.stdout).not.toContain(used.keyId);
    expect(text.stdout + JSON.stringify(keys)).not.toContain(used.hmacKey);

    const revoked = await run(['eab', 'revoke', used.keyId]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain(`Revoked EAB key ${used.keyId}`);
    expect(revoked.stdout).toContain(`Its account ${id} is revoked`);
    await expect(client.createOrder({ identifiers: [{ type: 'dns', value: 'more.example.test' }] })).rejects.toThrow(
      /Account is revoked/,
    );
    const orderNow = await env.ca.ctx.database.db
      .selectFrom('acme_orders')
      .select('status')
      .where('id', '=', order.url.split('/').pop()!)
      .executeTakeFirstOrThrow();
    expect(orderNow.status).toBe('invalid');
    expect((await run(['eab', 'revoke', used.keyId])).stdout).toMatch(/already revoked .*nothing changed/);

    // A revoked key that never bound an account binds none now.
    expect((await run(['eab', 'revoke', spare.keyId])).stdout).toContain('It had bound no account');
    await expect(register(spare)).rejects.toThrow(/has been revoked/);
    const states = await json<{ keyId: string; state: string }[]>(['eab', 'list', '--state', 'revoked']);
    expect(states.map((k) => k.keyId).sort()).toEqual([used.keyId, spare.keyId].sort());

    const audit = await json<{ action: string; principal: string }[]>(['audit', 'list', '--limit', '1000']);
    const actions = audit.map((e) => e.action);
    expect(actions.filter((a) => a === 'create-eab-key')).toHaveLength(2);
    expect(actions.filter((a) => a === 'revoke-eab-key')).toHaveLength(2);
  });

  it('lists accounts and deactivates one: its requests are refused, the others go on', async () => {
    const a = await register(await createKey('team-a'));
    const b = await register(await createKey('team-b'));
    const accounts = await json<{ id: string; status: string; contact: string[] }[]>(['acme', 'accounts', 'list']);
    expect(accounts).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: a.id, status: 'valid', contact: ['mailto:ops@example.test'] }),
        expect.objectContaining({ id: b.id, status: 'valid' }),
      ]),
    );

    const out = await run(['acme', 'accounts', 'deactivate', a.id]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(`Deactivated ACME account ${a.id}`);
    await expect(a.client.createOrder({ identifiers: [{ type: 'dns', value: 'a.example.test' }] })).rejects.toThrow(
      /Account is deactivated/,
    );
    await b.client.createOrder({ identifiers: [{ type: 'dns', value: 'b.example.test' }] });

    const deactivated = await json<{ id: string }[]>(['acme', 'accounts', 'list', '--status', 'deactivated']);
    expect(deactivated.map((x) => x.id)).toEqual([a.id]);
    expect((await run(['acme', 'accounts', 'deactivate', a.id])).stdout).toContain(
      'already deactivated; nothing changed',
    );
  });

  it('names the mistake and changes nothing', async () => {
    const before = await json<unknown[]>(['acme', 'accounts', 'list']);
    const unknown = await run(['acme', 'accounts', 'deactivate', 'no-such-account']);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toContain('no ACME account with id no-such-account');
    const noKey = await run(['eab', 'revoke', 'kw_nope']);
    expect(noKey.code).toBe(3);
    expect(noKey.stderr).toContain('no EAB key with id kw_nope');
    const badState = await run(['eab', 'list', '--state', 'used']);
    expect(badState.code).toBe(2);
    expect(badState.stderr).toContain('--state must be one of unused, bound, revoked');
    const badStatus = await run(['acme', 'accounts', 'list', '--status', 'gone']);
    expect(badStatus.code).toBe(2);
    expect(badStatus.stderr).toContain('--status must be one of valid, deactivated, revoked');
    expect((await run(['acme', 'accounts', 'list', '--limit', '0'])).stderr).toContain(
      '--limit must be a whole number',
    );
    expect((await run(['eab', 'revoke'])).stderr).toContain('eab revoke needs exactly one ID');
    expect(await json<unknown[]>(['acme', 'accounts', 'list'])).toEqual(before);
  });
});
