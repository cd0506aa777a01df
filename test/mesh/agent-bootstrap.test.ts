import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createBootstrapToken } from '../../src/mesh/tokens.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';

// `keyward agent --root-fingerprint`: no CA file to distribute, only the fingerprint the operator
// copied from `keyward serve`'s banner (as `step ca bootstrap` does).
describe('keyward agent bootstraps trust from the root fingerprint', () => {
  let ca: TestCa;
  let dir: string;
  let fingerprint: string;

  beforeAll(async () => {
    ca = await startTestCa();
    dir = mkdtempSync(join(tmpdir(), 'kw-bootstrap-'));
    fingerprint = new X509Certificate(ca.rootPem).fingerprint256;
  });
  afterAll(async () => {
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const token = async () =>
    (
      await createBootstrapToken(
        { config: ca.config, db: ca.ctx.database.db, kms: ca.ctx.kms, issuance: ca.ctx.issuance },
        { id: 'spiffe://prod.example/ns/pay/sa/api', principal: 'test' },
      )
    ).token;

  it('with the right fingerprint (any case, with or without colons) it trusts that root and gets a certificate', async () => {
    for (const [i, fp] of [fingerprint, fingerprint.replace(/:/g, '').toLowerCase()].entries()) {
      const out = join(dir, `ok-${i}`);
      const r = await cli(['agent', '--token', await token(), '--out', out, '--root-fingerprint', fp, '--once'], {});
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(out, 'bundle.pem'), 'utf8')).toContain('BEGIN CERTIFICATE');
    }
    // The roots can also come from the plain HTTP listener.
    const r = await cli(
      [
        'agent',
        ...['--token', await token(), '--out', join(dir, 'http'), '--root-fingerprint', fingerprint],
        ...['--roots-url', `${ca.httpUrl}/roots.pem`, '--once'],
      ],
      {},
    );
    expect(r.code, r.stderr).toBe(0);
  });

  it('with another fingerprint it refuses, names what it found, and writes nothing', async () => {
    const wrong = 'AB'.repeat(32);
    const out = join(dir, 'wrong');
    const r = await cli(['agent', '--token', await token(), '--out', out, '--root-fingerprint', wrong, '--once'], {});
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`has SHA-256 fingerprint ${wrong} (found ${fingerprint}); refusing to trust it`);
    expect(existsSync(out)).toBe(false);
    const bad = await cli(
      ['agent', '--token', 't', '--out', out, '--root-fingerprint', 'abc', '--server', ca.httpsUrl],
      {},
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--root-fingerprint must be a SHA-256 fingerprint');
  });

  it('without either, the system store does not know our root: the error says what to pass', async () => {
    const r = await cli(['agent', '--token', await token(), '--out', join(dir, 'none'), '--once'], {});
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('pass --ca-file roots.pem or --root-fingerprint SHA256');
  });
});
