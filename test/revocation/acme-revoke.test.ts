import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AcmeTestEnv, issue, startAcmeEnv } from '../support/acme.ts';
import { cli } from '../support/cli.ts';
import { opensslOcsp, pemFiles } from './helpers.ts';

const run = promisify(execFile);

// An ACME client's revokeCert reaches every lookup: the OCSP answer and the next CRL.
describe('ACME revokeCert shows up in OCSP and the CRL', () => {
  let env: AcmeTestEnv;
  beforeAll(async () => {
    env = await startAcmeEnv();
  });
  afterAll(async () => env.close());

  it('turns the OCSP answer to revoked and lists the serial in the published CRL', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'revoked-by-acme.example.test' }], 'http-01');
    const files = await pemFiles(env.ca);
    const leafFile = files.file('acme-leaf.pem', certPem);
    try {
      const before = await opensslOcsp(env.ca, files, ['-cert', leafFile]);
      expect(before.out).toMatch(/acme-leaf\.pem: good/);

      await client.revokeCertificate(certPem, { reason: 1 });

      const after = await opensslOcsp(env.ca, files, ['-cert', leafFile]);
      expect(after.out).toMatch(/acme-leaf\.pem: revoked/);
      expect(after.out).toContain('Reason: keyCompromise');

      const pub = await cli(['crl', 'publish', '--json'], env.ca.env, { context: env.ca.ctx });
      expect(pub.code, pub.stderr).toBe(0);
      const { stdout: serialLine } = await run('openssl', ['x509', '-noout', '-serial', '-in', leafFile]);
      const serial = serialLine.trim().split('=')[1]!;
      const { stdout: cdpText } = await run('openssl', [
        'x509',
        '-noout',
        '-ext',
        'crlDistributionPoints',
        '-in',
        leafFile,
      ]);
      const crlUrl = /URI:(\S+)/.exec(cdpText)![1]!;
      const der = Buffer.from(await (await fetch(crlUrl)).arrayBuffer());
      const crlFile = files.file('acme.crl', der);
      const { stdout, stderr } = await run('openssl', [
        'crl',
        '-inform',
        'DER',
        '-in',
        crlFile,
        '-CAfile',
        files.chain,
        '-noout',
        '-text',
      ]);
      expect(stderr + stdout).toContain('verify OK');
      expect(stdout).toContain(`Serial Number: ${serial}`);
      expect(stdout).toContain('Key Compromise');
    } finally {
      files.cleanup();
    }
  });
});
