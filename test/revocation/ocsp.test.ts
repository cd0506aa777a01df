import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { createTestPki, openssl } from '../support/pki.ts';
import { issueLeaf, type Leaf, opensslOcsp, pemFiles, waitFor, waitForPresigned } from './helpers.ts';

// OCSP as a relying party sees it: the real openssl client against `keyward serve`, revocation
// through the real CLI, and the leaf extensions that point clients at the responder.
describe('OCSP responder and revocation', () => {
  let ca: TestCa;
  let files: Awaited<ReturnType<typeof pemFiles>>;
  let leaf: Leaf;

  beforeAll(async () => {
    ca = await startTestCa({ settings: { revocation: { crlPublishDelay: '3s', crlShards: 2 } } });
    leaf = await issueLeaf(ca);
    files = await pemFiles(ca, leaf);
    // The background work creates the delegated responder certificate at start.
    await waitFor(
      'an OCSP signer',
      async () => (await ca.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
    );
  });
  afterAll(async () => {
    files?.cleanup();
    await ca?.close();
  });

  it('an active-profile leaf carries its CRL shard and the OCSP URL; a short passive mtls one carries neither', async () => {
    const text = openssl(['x509', '-noout', '-text', '-in', files.leaf]).stdout;
    const row = await ca.ctx.ca.certificate(leaf.serial);
    const crlName = row.crl_shard === 0 ? `${leaf.issuerId}.crl` : `${leaf.issuerId}-${row.crl_shard}.crl`;
    expect(text).toContain(`URI:${ca.httpUrl}/crl/${crlName}`);
    expect(text).toContain(`OCSP - URI:${ca.httpUrl}/ocsp`);
    expect(text).toContain(`CA Issuers - URI:${ca.httpUrl}/issuers/${leaf.issuerId}.cer`);

    const passive = await issueLeaf(ca, { profile: 'mtls', lifetimeMs: 24 * 3600_000 });
    const ptext = openssl(['x509', '-noout', '-text'], { input: Buffer.from(passive.pem) }).stdout;
    expect(ptext).toContain('TLS Web Client Authentication');
    expect(ptext).not.toContain('CRL Distribution Points');
    expect(ptext).not.toContain('OCSP');
    // Longer than the passive threshold: active again.
    const longer = await issueLeaf(ca, { profile: 'mtls', lifetimeMs: 48 * 3600_000 });
    expect(openssl(['x509', '-noout', '-text'], { input: Buffer.from(longer.pem) }).stdout).toContain('OCSP - URI:');
  });

  it('shards are assigned at issuance from the configured count', async () => {
    const shards = new Set<number>();
    for (let i = 0; i < 12; i++) shards.add((await ca.ctx.ca.certificate((await issueLeaf(ca)).serial)).crl_shard);
    expect([...shards].every((s) => s === 0 || s === 1)).toBe(true);
    expect(shards.size).toBe(2);
  });

  it('answers good, with SHA-1 and SHA-256 CertIDs, with and without a nonce; the delegated signer chain verifies', async () => {
    const withNonce = await opensslOcsp(ca, files, ['-cert', files.leaf], ['-resp_text']);
    expect(withNonce.out).toContain(`${files.leaf}: good`);
    expect(withNonce.out).toContain('Response verify OK');
    expect(withNonce.out).not.toContain('WARNING: no nonce');
    // The delegated responder certificate: OCSP Signing EKU, ocsp-nocheck, short life.
    expect(withNonce.out).toContain('OCSP Signing');
    expect(withNonce.out).toContain('OCSP No Check');

    const cached = await opensslOcsp(ca, files, ['-cert', files.leaf, '-no_nonce']);
    expect(cached.out).toContain(`${files.leaf}: good`);
    expect(cached.out).toContain('Response verify OK');

    for (let i = 0; i < 2; i++) {
      const sha256 = await opensslOcsp(ca, files, ['-sha256', '-cert', files.leaf, '-no_nonce'], ['-resp_text']);
      expect(sha256.out).toContain(`${files.leaf}: good`);
      expect(sha256.out).toContain('Hash Algorithm: sha256');
      expect(sha256.out).toContain('Response verify OK');
    }

    const signer = await ca.ctx.database.db.selectFrom('ocsp_signers').selectAll().executeTakeFirstOrThrow();
    const life = signer.not_after.getTime() - signer.not_before.getTime();
    expect(life).toBeLessThanOrEqual(7 * 86_400_000 + 60_000);
    const key = await ca.ctx.database.db
      .selectFrom('kms_keys')
      .select(['usage', 'key_ciphertext'])
      .where('id', '=', signer.key_id)
      .executeTakeFirstOrThrow();
    expect(key.usage).toBe('ocsp');
    expect(key.key_ciphertext).not.toBeNull();
  });

  it('answers serials this issuer never issued with the unsigned unauthorized error (no signature to spend)', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await opensslOcsp(ca, files, ['-serial', `0x1234567890abcde${i}`]);
      // OCSPResponseStatus 6 alone: an error response carries no responseBytes, so nothing was signed.
      expect(r.out).toMatch(/Responder Error: unauthorized \(6\)/);
    }
  });

  it('keyward revoke flips the answer to revoked with time and reason; a second revoke changes nothing', async () => {
    const before = await opensslOcsp(ca, files, ['-cert', files.leaf, '-no_nonce']);
    expect(before.out).toContain(': good');

    const r = await cli(['revoke', leaf.serial, '--reason', 'keyCompromise', '--json'], ca.env, { context: ca.ctx });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ serial: leaf.serial, reason: 'keyCompromise' });

    const after = await opensslOcsp(ca, files, ['-cert', files.leaf, '-no_nonce']);
    expect(after.out).toContain(`${files.leaf}: revoked`);
    expect(after.out).toContain('Reason: keyCompromise');
    expect(after.out).toMatch(/Revocation Time: .+GMT/);
    expect(after.out).toContain('Response verify OK');

    const again = await cli(['revoke', leaf.serial, '--reason', 'superseded'], ca.env, { context: ca.ctx });
    expect(again.code).toBe(4); // conflicts with the current state
    expect(again.stderr).toContain('alreadyRevoked');
    const row = await ca.ctx.ca.certificate(leaf.serial);
    expect(row.revocation_reason).toBe(1);
    expect(row.revoked_at?.toISOString()).toBe(out.revokedAt);

    const badReason = await cli(['revoke', leaf.serial, '--reason', 'cACompromise'], ca.env, { context: ca.ctx });
    expect(badReason.code).toBe(2);
  });

  it('keyCompromise blocks the key: issuing for it again is refused with badPublicKey', async () => {
    await expect(issueLeaf(ca, { spki: leaf.spki })).rejects.toMatchObject({ code: 'badPublicKey' });
  });

  it('a passive certificate can still be revoked, and the fact is recorded', async () => {
    const passive = await issueLeaf(ca, { profile: 'mtls', lifetimeMs: 3600_000 });
    const r = await cli(['revoke', passive.serial, '--reason', 'superseded', '--json'], ca.env, { context: ca.ctx });
    expect(r.code, r.stderr).toBe(0);
    expect((await ca.ctx.ca.certificate(passive.serial)).status).toBe('revoked');
  });

  it('GET per RFC 5019 serves the pre-signed answer with HTTP cache headers, and 304 on a matching ETag', async () => {
    const fresh = await issueLeaf(ca);
    // Wait until the refresher pre-signed it: then the lookup costs no signature.
    await waitForPresigned(ca, fresh.serial);
    const t = await pemFiles(ca, fresh);
    try {
      const req = openssl(['ocsp', '-issuer', t.inter, '-cert', t.leaf, '-no_nonce', '-reqout', `${t.dir}/req.der`]);
      expect(req.status, req.stderr).toBe(0);
      const der = openssl(['base64', '-A', '-in', `${t.dir}/req.der`]).stdout.trim();
      const url = `${ca.httpUrl}/ocsp/${encodeURIComponent(der)}`;
      const signs = async () =>
        Number(
          (
            await ca.ctx.database.db
              .selectFrom('audit_events')
              .select((eb) => eb.fn.countAll().as('n'))
              .where('action', '=', 'sign-ocsp')
              .executeTakeFirstOrThrow()
          ).n,
        );
      const signsBefore = await signs();
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/ocsp-response');
      const cc = res.headers.get('cache-control') ?? '';
      const maxAge = Number(/max-age=(\d+)/.exec(cc)?.[1]);
      expect(maxAge).toBeGreaterThan(3600);
      expect(maxAge).toBeLessThanOrEqual(12 * 3600);
      expect(cc).toContain('public');
      expect(res.headers.get('etag')).toMatch(/^"[0-9a-f]+"$/);
      expect(Date.parse(res.headers.get('last-modified') ?? '')).toBeLessThanOrEqual(Date.now());
      expect(Date.parse(res.headers.get('expires') ?? '')).toBeGreaterThan(Date.now());
      const body = new Uint8Array(await res.arrayBuffer());
      expect(await signs()).toBe(signsBefore);
      t.file('resp.der', body);
      const parsed = openssl([
        'ocsp',
        '-respin',
        `${t.dir}/resp.der`,
        '-issuer',
        t.inter,
        '-cert',
        t.leaf,
        '-CAfile',
        t.root,
        '-verify_other',
        t.inter,
      ]);
      expect(`${parsed.stdout}${parsed.stderr}`).toContain(`${t.leaf}: good`);

      const again = await fetch(url, { headers: { 'if-none-match': res.headers.get('etag')! } });
      expect(again.status).toBe(304);
    } finally {
      t.cleanup();
    }
  });

  it('refuses malformed requests with malformedRequest, foreign issuers with unauthorized, and changes nothing', async () => {
    const count = async () =>
      Number(
        (
          await ca.ctx.database.db
            .selectFrom('certificates')
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );
    const certsBefore = await count();
    const status = (b: Uint8Array) => Array.from(b);
    const MALFORMED = [0x30, 3, 0x0a, 1, 1];

    const garbage = await fetch(`${ca.httpUrl}/ocsp`, {
      method: 'POST',
      headers: { 'content-type': 'application/ocsp-request' },
      body: 'this is not DER',
    });
    expect(garbage.status).toBe(200);
    expect(status(new Uint8Array(await garbage.arrayBuffer()))).toEqual(MALFORMED);

    const huge = await fetch(`${ca.httpUrl}/ocsp`, {
      method: 'POST',
      headers: { 'content-type': 'application/ocsp-request' },
      body: new Uint8Array(64 * 1024).fill(0x30),
    });
    expect(huge.status).toBe(413);
    expect(status(new Uint8Array(await huge.arrayBuffer()))).toEqual(MALFORMED);

    const badB64 = await fetch(`${ca.httpUrl}/ocsp/${encodeURIComponent('!!not*base64!!')}`);
    expect(badB64.status).toBe(200);
    expect(status(new Uint8Array(await badB64.arrayBuffer()))).toEqual(MALFORMED);

    // A well-formed request about another CA's certificate: we are not its responder.
    const foreign = await createTestPki();
    const t = await pemFiles(ca);
    try {
      const fi = t.file('foreign-inter.pem', foreign.intermediate.pem);
      const fl = t.file('foreign-leaf.pem', foreign.leaf.pem);
      openssl(['ocsp', '-issuer', fi, '-cert', fl, '-no_nonce', '-reqout', `${t.dir}/foreign.der`]);
      const { readFileSync } = await import('node:fs');
      const res = await fetch(`${ca.httpUrl}/ocsp`, {
        method: 'POST',
        headers: { 'content-type': 'application/ocsp-request' },
        body: readFileSync(`${t.dir}/foreign.der`),
      });
      expect(status(new Uint8Array(await res.arrayBuffer()))).toEqual([0x30, 3, 0x0a, 1, 6]);
    } finally {
      t.cleanup();
    }
    expect(await count()).toBe(certsBefore);
    // Still answering normally afterwards.
    expect((await opensslOcsp(ca, files, ['-cert', files.leaf, '-no_nonce'])).out).toMatch(/: (good|revoked)/);
  });
});
