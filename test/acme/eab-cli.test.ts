import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, startAcmeEnv } from '../support/acme.ts';
import { cli } from '../support/cli.ts';

// The operator's path: `keyward eab create` while the server runs, then a client registers with it.
describe('keyward eab create', () => {
  let env: AcmeTestEnv;
  beforeAll(async () => {
    env = await startAcmeEnv({ acme: { externalAccountRequired: true } });
  });
  afterAll(async () => env.close());

  it('prints a key id and HMAC key that an ACME client can register with once', async () => {
    const r = await cli(['eab', 'create', '--label', 'team-payments', '--json'], env.ca.env, { context: env.ca.ctx });
    expect(r.code, r.stderr).toBe(0);
    const key = JSON.parse(r.stdout) as { keyId: string; hmacKey: string; label: string };
    expect(key.label).toBe('team-payments');
    expect(key.hmacKey).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const client = await env.client({ externalAccountBinding: { kid: key.keyId, hmacKey: key.hmacKey } });
    await client.createAccount({ termsOfServiceAgreed: true });
    expect(client.getAccountUrl()).toMatch(/\/acme\/acct\//);

    const second = await env.client({ externalAccountBinding: { kid: key.keyId, hmacKey: key.hmacKey } });
    await expect(second.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow();
    const withoutBinding = await env.client();
    await expect(withoutBinding.createAccount({ termsOfServiceAgreed: true })).rejects.toThrow(/external account/i);
  });

  it('names the option when the label is wrong', async () => {
    const r = await cli(['eab', 'create', '--label', ''], env.ca.env, { context: env.ca.ctx });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--label must be 1 to 200 characters');
  });
});
