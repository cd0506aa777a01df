import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, internals, resolveToLoopback, startAcmeEnv } from '../support/acme.ts';
import { captureLog } from '../support/log.ts';

// A failed validation reaches the client while it is still polling: a wrong answer is final at
// once (only network trouble is retried, inside validation.retryFor, 20 s by default), so the
// client reports the server's problem instead of timing out, and the operator's log says why.
describe('failed validations', () => {
  let env: AcmeTestEnv;
  const log = captureLog('info');

  beforeAll(async () => {
    // retryFor left at its default.
    env = await startAcmeEnv({ validation: { retryFor: undefined }, log: log.logger });
  });
  afterAll(async () => env?.close());

  it("a wrong http-01 answer: acme-client reports the server's detail, the authorization and order are invalid, the log has it at info", async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const name = 'wrong-answer.example.test';
    resolveToLoopback(env, name);
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
    const [authz] = await client.getAuthorizations(order);
    const challenge = authz!.challenges.find((c) => c.type === 'http-01')! as { url: string; token: string };
    env.http01.set(challenge.token, 'not-the-key-authorization');

    await client.completeChallenge(challenge as Parameters<typeof client.completeChallenge>[0]);
    // acme-client polls with back-off (at most ~15 s here); it sees the problem before giving up.
    await expect(
      client.waitForValidStatus(challenge as Parameters<typeof client.waitForValidStatus>[0]),
    ).rejects.toThrow(/Expected "[\w-]+\.[\w-]+" \(got "not-the-key-authorization"\)/);

    const [after] = await client.getAuthorizations(order);
    expect(after!.status).toBe('invalid');
    const o = await internals(client).api.apiRequest(order.url, null, [200]);
    expect(o.data.status).toBe('invalid');
    expect(o.data.error).toMatchObject({
      type: 'urn:ietf:params:acme:error:incorrectResponse',
      detail: expect.stringContaining(`Validation of ${name} failed`),
    });
    const account = client.getAccountUrl().split('/').pop();
    expect(log.withMessage('validation failed')).toEqual([
      expect.objectContaining({
        level: 30,
        outcome: 'invalid',
        identifier: name,
        type: 'http-01',
        problem: 'incorrectResponse',
        detail: expect.stringContaining('Expected'),
        account,
      }),
    ]);
  });
});
