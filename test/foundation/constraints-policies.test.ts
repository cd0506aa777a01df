import { generateKeyPairSync } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { toPem } from '../../src/ca/pem.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { opensslText, opensslVerify } from '../support/openssl.ts';

// An intermediate limited by X.509 name constraints, and a profile with an extra extension.
describe('name constraints and certificate policies', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({
      serve: false,
      settings: {
        ca: { intermediate: { nameConstraints: { permittedDns: ['internal'], excludedIp: ['10.0.0.0/8'] } } },
        profiles: {
          'policy-test': {
            extKeyUsages: ['serverAuth'],
            certificatePolicies: ['1.3.6.1.4.1.55555.1.2'],
            sanTypes: ['dns', 'ip'],
          },
        },
      },
    });
  });
  afterAll(async () => ca.close());

  const issue = (dns: string[], ip: string[] = [], profile = 'policy-test') =>
    ca.ctx.ca.issue({
      subjectPublicKeyInfo: new Uint8Array(
        generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' }),
      ),
      keyType: 'ecdsa-p256',
      sans: { dns, ip, uri: [], email: [] },
      profile,
      requester: 'test',
    });

  it('writes the constraints into the intermediate, and leaves inside them verify with openssl', async () => {
    const inter = await ca.ctx.ca.intermediatesPem();
    const text = opensslText(inter);
    expect(text).toMatch(/X509v3 Name Constraints: critical/);
    expect(text).toContain('DNS:internal');
    const leaf = await issue(['app.internal', 'db.svc.internal'], ['192.168.1.5']);
    expect(opensslVerify(ca.rootPem, leaf.chainPem)).toMatchObject({ ok: true });
    const leafText = opensslText(toPem(leaf.der));
    expect(leafText).toContain('X509v3 Certificate Policies');
    expect(leafText).toContain('Policy: 1.3.6.1.4.1.55555.1.2');
  });

  it('refuses names outside the constraints instead of signing what relying parties would reject', async () => {
    await expect(issue(['app.example.com'])).rejects.toThrow(
      /"app.example.com" is outside the issuing CA's name constraints/,
    );
    await expect(issue(['ok.internal'], ['10.1.2.3'])).rejects.toThrow(/10\.1\.2\.3 is outside/);
    await expect(issue(['app.notinternal.test'])).rejects.toThrow(/outside/);
  });

  it('profiles without extra extensions carry no policy', async () => {
    const leaf = await issue(['plain.internal'], [], 'tls-server');
    expect(opensslText(toPem(leaf.der))).not.toContain('Certificate Policies');
  });
});
