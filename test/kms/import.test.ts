import { execFileSync } from 'node:child_process';
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { AppContext } from '../../src/context.ts';
import type { ImportParams, ImportResult } from '../../src/kms/import.ts';
import type { KeySummary } from '../../src/kms/inventory.ts';
import { wrapForImport } from '../support/byok.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { tempDir } from '../support/openssl.ts';
import { kmsCli } from './helpers.ts';

const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/** A key in the given PEM form and a self-signed certificate for it, made by openssl. */
function keyAndCert(dir: string, name: string, kind: 'pkcs8-ec' | 'sec1' | 'pkcs1'): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  if (kind === 'sec1') ossl('ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', key);
  else if (kind === 'pkcs1') ossl('genrsa', '-traditional', '-out', key, '3072');
  else ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', key);
  const cert = join(dir, `${name}.crt`);
  ossl('req', '-x509', '-new', '-key', key, '-subj', `/CN=${name}`, '-days', '30', '-out', cert);
  return { key, cert };
}

describe('bring your own key', () => {
  let ca: TestCa;
  let ctx: AppContext;
  let dir: string;
  beforeAll(async () => {
    ca = await startTestCa({ serve: false });
    ctx = ca.ctx;
    dir = tempDir('kw-import-');
  });
  afterAll(async () => {
    await ca.close();
  });

  async function signsLike(keyId: string, certFile: string): Promise<void> {
    const signer = await ctx.kms.signer(keyId, 'sign-certificate', 'test');
    const data = randomBytes(64);
    const sig = await signer.sign(data);
    const pub = createPublicKey(readFileSync(certFile));
    const digest = pub.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'sha384' : 'sha256';
    expect(verify(digest, data, pub, sig)).toBe(true);
  }

  it.each(['pkcs8-ec', 'sec1', 'pkcs1'] as const)(
    'imports a %s PEM key matching its certificate and signs with it',
    async (kind) => {
      const { key, cert } = keyAndCert(dir, `plain-${kind}`, kind);
      const out = await kmsCli<ImportResult>(ctx, ['kms', 'import'], { key, cert, usage: 'intermediate' });
      expect(out.alg).toBe({ 'pkcs8-ec': 'ecdsa-p384', sec1: 'ecdsa-p256', pkcs1: 'rsa-3072' }[kind]);
      const listed = (await kmsCli<KeySummary[]>(ctx, ['kms', 'list'])).find((k) => k.id === out.keyId)!;
      expect(listed).toMatchObject({ state: 'Enabled', name: 'intermediate' });
      const row = await ctx.database.db
        .selectFrom('kms_keys')
        .select(['key_ciphertext'])
        .where('id', '=', out.keyId)
        .executeTakeFirstOrThrow();
      expect(Buffer.from(row.key_ciphertext!).subarray(0, 4).toString()).toBe('KWE1');
      const audit = await ctx.database.db
        .selectFrom('audit_events')
        .selectAll()
        .where('key_id', '=', out.keyId)
        .where('action', '=', 'import')
        .executeTakeFirstOrThrow();
      expect(audit.context).toMatchObject({ spki_sha256: out.spkiSha256, source: 'pem' });
      await signsLike(out.keyId, cert);
    },
  );

  it('refuses a key that does not match the certificate, and a non-key file', async () => {
    const a = keyAndCert(dir, 'mismatch-a', 'sec1');
    const b = keyAndCert(dir, 'mismatch-b', 'sec1');
    await expect(kmsCli(ctx, ['kms', 'import'], { key: a.key, cert: b.cert })).rejects.toThrow(
      "key does not match the certificate's public key",
    );
    await expect(kmsCli(ctx, ['kms', 'import'], { key: a.cert, cert: a.cert })).rejects.toThrow(
      /not a PEM private key/,
    );
  });

  const wrapOffline = (pubPem: string, keyFile: string, name: string) => wrapForImport(dir, pubPem, keyFile, name);

  it('wrapped import: RSA-OAEP(eph) || AES-KWP(PKCS#8) made offline with openssl; the token is single use', async () => {
    const params = await kmsCli<ImportParams>(ctx, ['kms', 'import-params'], { usage: 'intermediate' });
    expect(params.wrappingPublicKeyPem).toMatch(/BEGIN PUBLIC KEY/);
    expect(createPublicKey(params.wrappingPublicKeyPem).asymmetricKeyDetails?.modulusLength).toBe(3072);
    const pending = (await kmsCli<KeySummary[]>(ctx, ['kms', 'list'])).find((k) => k.id === params.keyId)!;
    expect(pending.state).toBe('PendingImport');
    const { key, cert } = keyAndCert(dir, 'wrapped', 'pkcs1');
    const blob = wrapOffline(params.wrappingPublicKeyPem, key, 'wrapped');

    await expect(
      kmsCli(ctx, ['kms', 'import'], { wrapped: blob, token: randomBytes(32).toString('base64url'), cert }),
    ).rejects.toThrow('import token is not valid');
    const other = keyAndCert(dir, 'wrapped-other', 'sec1');
    await expect(
      kmsCli(ctx, ['kms', 'import'], { wrapped: blob, token: params.importToken, cert: other.cert }),
    ).rejects.toThrow("key does not match the certificate's public key");
    // A refused attempt doesn't use up the token.
    const out = await kmsCli<ImportResult>(ctx, ['kms', 'import'], { wrapped: blob, token: params.importToken, cert });
    expect(out).toMatchObject({ keyId: params.keyId, alg: 'rsa-3072', usage: 'intermediate' });
    await signsLike(out.keyId, cert);
    await expect(kmsCli(ctx, ['kms', 'import'], { wrapped: blob, token: params.importToken, cert })).rejects.toThrow(
      'import token is not valid',
    );
    const job = await ctx.database.db
      .selectFrom('kms_import_jobs')
      .selectAll()
      .where('id', '=', params.jobId)
      .executeTakeFirstOrThrow();
    expect(job.wrapping_priv).toBeNull();
    expect(job.used_at).not.toBeNull();
    // The token never reaches the audit log.
    const events = await ctx.database.db.selectFrom('audit_events').select('context').execute();
    expect(JSON.stringify(events)).not.toContain(params.importToken);
  });

  it('wrapped import: an expired token is refused with its expiry time; a blob for another job fails clearly', async () => {
    const p1 = await kmsCli<ImportParams>(ctx, ['kms', 'import-params'], {});
    const p2 = await kmsCli<ImportParams>(ctx, ['kms', 'import-params'], {});
    const { key, cert } = keyAndCert(dir, 'expired', 'sec1');
    const blob1 = wrapOffline(p1.wrappingPublicKeyPem, key, 'expired');
    await expect(kmsCli(ctx, ['kms', 'import'], { wrapped: blob1, token: p2.importToken, cert })).rejects.toThrow(
      /not encrypted to this import job's wrapping key/,
    );
    await sql`UPDATE kms_import_jobs SET expires_at = now() - interval '1 minute' WHERE id = ${p1.jobId}`.execute(
      ctx.database.db,
    );
    const expires = await ctx.database.db
      .selectFrom('kms_import_jobs')
      .select('expires_at')
      .where('id', '=', p1.jobId)
      .executeTakeFirstOrThrow();
    await expect(kmsCli(ctx, ['kms', 'import'], { wrapped: blob1, token: p1.importToken, cert })).rejects.toThrow(
      `import token expired at ${new Date(expires.expires_at).toISOString()}`,
    );
  });
});
