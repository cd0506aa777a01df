import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { newKeyAndCsr } from '../../src/mesh/csr-client.ts';
import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { httpsJson } from '../mesh/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';

// What every front end shares once requests go through src/issuance: a signature the key
// hierarchy refuses leaves an `abandoned` reservation (never a `reserved` one that reads as a
// certificate whose record may be lost), and what the request spent is given back.
describe('issuance: a refused signature', () => {
  let ca: TestCa;

  beforeAll(async () => {
    ca = await startTestCa({
      settings: {
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

  async function withIntermediateDisabled<T>(run: () => Promise<T>): Promise<T> {
    const db = ca.ctx.database.db;
    const issuer = await ca.ctx.ca.issuerForProfile('mesh-test');
    await db.updateTable('kms_keys').set({ state: 'Disabled' }).where('id', '=', issuer.key_id).execute();
    try {
      return await run();
    } finally {
      await db.updateTable('kms_keys').set({ state: 'Enabled' }).where('id', '=', issuer.key_id).execute();
    }
  }

  it('marks the reservation abandoned, lists it with certs list --state abandoned, and gives the bootstrap token back', async () => {
    const { token } = await createBootstrapToken(
      { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance },
      { id: 'spiffe://test.example/refused', dns: ['refused.svc.internal'], profile: 'mesh-test', principal: 'test' },
    );
    const sign = async () =>
      httpsJson(`${ca.httpsUrl}/v1/sign`, { body: { csr: (await newKeyAndCsr()).csrPem, token }, ca: ca.rootPem });

    const refused = await withIntermediateDisabled(sign);
    expect(refused.status).toBe(409);
    expect(String(refused.json.detail)).toMatch(/is Disabled and cannot sign/);

    const listed = await cli(['certs', 'list', '--state', 'abandoned', '--json'], ca.env, { context: ca.ctx });
    expect(listed.code, listed.stderr).toBe(0);
    const abandoned = JSON.parse(listed.stdout) as Array<{ serial: string; state: string; requester: string }>;
    expect(abandoned).toHaveLength(1);
    expect(abandoned[0]).toMatchObject({ state: 'abandoned', requester: expect.stringMatching(/^mesh:token:/) });
    const reserved = await cli(['certs', 'list', '--state', 'reserved', '--json'], ca.env, { context: ca.ctx });
    expect(JSON.parse(reserved.stdout)).toEqual([]);
    // Never a certificate under the abandoned serial.
    await expect(ca.ctx.ca.certificate(abandoned[0]!.serial)).rejects.toThrow(/no certificate/);

    // The same token works once the key signs again: spending and issuing succeed or fail together.
    const ok = await sign();
    expect(ok.status, JSON.stringify(ok.json)).toBe(200);
    const again = await sign();
    expect(again.status).toBe(401);
  });

  it('certs list refuses a state it does not know, naming the option', async () => {
    const r = await cli(['certs', 'list', '--state', 'lost'], ca.env, { context: ca.ctx });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--state must be reserved or abandoned');
  });
});
