import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { toPem } from '../../src/ca/pem.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { openssl, tempDir } from '../support/pki.ts';
import { issueLeaf, opensslOcsp, waitFor } from './helpers.ts';

// A new intermediate's first certificates are checked at once (a server that staples OCSP asks as
// soon as it has the certificate), so its OCSP signer and CRL can't wait for the next background
// round, here 30 s away (crlPublishDelay 10m).
describe('revocation for a new intermediate, right after `ca rotate-intermediate`', () => {
  let ca: TestCa;
  const dir = tempDir('kw-rotation-');

  beforeAll(async () => {
    ca = await startTestCa({ settings: { revocation: { crlPublishDelay: '10m' } } });
  });
  afterAll(async () => {
    dir.cleanup();
    await ca?.close();
  });

  it('OCSP answers good for its first certificate, and its CRL is published on the change notice', async () => {
    const old = await ca.ctx.ca.issuerForProfile('tls-server');
    const r = await cli(['ca', 'rotate-intermediate', old.id, '--json'], ca.env, { context: ca.ctx });
    expect(r.code, r.stderr).toBe(0);
    const made = (JSON.parse(r.stdout) as { new: { id: string } }).new.id;
    const inter = (await ca.ctx.ca.issuers()).find((i) => i.id === made)!;

    const leaf = await issueLeaf(ca, { name: 'first.internal' });
    expect(leaf.issuerId).toBe(made);
    const files = {
      root: dir.file('root.pem', ca.rootPem),
      inter: dir.file('inter.pem', toPem(inter.certificate)),
      leaf: dir.file('leaf.pem', leaf.pem),
    };
    const ocsp = await opensslOcsp(ca, files, ['-cert', files.leaf]);
    expect(ocsp.out).toContain('Response verify OK');
    expect(ocsp.out).toContain(`${files.leaf}: good`);

    await waitFor(
      "the new intermediate's CRL",
      async () => (await fetch(`${ca.httpUrl}/crl/${made}.crl`)).status === 200,
      5_000,
    );
    const crl = dir.file('crl.der', new Uint8Array(await (await fetch(`${ca.httpUrl}/crl/${made}.crl`)).arrayBuffer()));
    const checked = openssl(['crl', '-inform', 'DER', '-in', crl, '-noout', '-CAfile', files.inter]);
    expect(checked.stdout + checked.stderr).toMatch(/verify OK/);
  });
});
