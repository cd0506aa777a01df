import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { newKeyAndCsr } from '../../src/mesh/csr-client.ts';
import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { httpsJson } from '../mesh/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslCsr } from '../support/openssl.ts';

// rateLimits.certificatesPerName is decided in src/issuance for every front end it is configured
// for; ACME's side is in test/acme/policy-limits.test.ts. Here: /v1/sign and `keyward issue`.
describe('certificates per name beyond ACME (rateLimits.certificatesPerName.appliesTo)', () => {
  let ca: TestCa;

  beforeAll(async () => {
    ca = await startTestCa({
      settings: {
        rateLimits: { certificatesPerName: { limit: 1, window: '1h', appliesTo: ['mesh', 'operator'] } },
        profiles: {
          'mesh-test': {
            extKeyUsages: ['serverAuth', 'clientAuth'],
            defaultLifetime: '10m',
            maxLifetime: '1h',
            sanTypes: ['dns', 'uri'],
          },
        },
      },
    });
  });
  afterAll(async () => ca?.close());

  const token = async (dns: string) =>
    createBootstrapToken(
      { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance },
      { dns: [dns], profile: 'mesh-test', principal: 'test' },
    );
  const sign = async (t: string) =>
    httpsJson(`${ca.httpsUrl}/v1/sign`, { body: { csr: (await newKeyAndCsr()).csrPem, token: t }, ca: ca.rootPem });

  it('/v1/sign: a second certificate for a name is rateLimited with Retry-After, and its token is not spent', async () => {
    const first = await sign((await token('limited.svc.internal')).token);
    expect(first.status, JSON.stringify(first.json)).toBe(200);

    const second = await token('limited.svc.internal');
    const refused = await sign(second.token);
    expect(refused.status).toBe(429);
    expect(refused.json.type).toBe('urn:ietf:params:acme:error:rateLimited');
    expect(String(refused.json.detail)).toContain('limited.svc.internal');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(3000);
    const row = await ca.ctx.database.db
      .selectFrom('mesh_tokens')
      .select(['used_at', 'used_serial'])
      .where('jti', '=', second.jti)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ used_at: null, used_serial: null });

    // Other names are not affected.
    expect((await sign((await token('other.svc.internal')).token)).status).toBe(200);
  });

  it('keyward issue: the same limit for the operator when configured', async () => {
    const { dir } = opensslCsr({ san: 'DNS:ops.limited.internal' });
    const first = await cli(['issue', '--csr', join(dir, 'req.csr')], ca.env, { context: ca.ctx });
    expect(first.code, first.stderr).toBe(0);
    const second = await cli(['issue', '--csr', join(dir, 'req.csr')], ca.env, { context: ca.ctx });
    expect(second.code).not.toBe(0);
    expect(second.stderr).toMatch(/Certificates for ops\.limited\.internal: at most 1 per 3600 s; retry after \d+ s/);
  });
});
