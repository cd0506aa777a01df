import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import { opensslOcsp, waitFor } from '../revocation/helpers.ts';
import { wrapForImport } from '../support/byok.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli as runCli } from '../support/cli.ts';
import { opensslCsr, opensslText, opensslVerify } from '../support/openssl.ts';
import { openssl, tempDir } from '../support/pki.ts';

const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

interface IssuerJson {
  id: string;
  kind: string;
  state: string;
  parentId: string | null;
  keyType: string;
  keyProtection: string;
  profiles: string[];
}

// An RSA CA made elsewhere with openssl, brought in with kms import (PEM and RSA-OAEP-wrapped) and
// ca adopt, through the command line while a server runs on the same CA.
describe('keyward ca adopt', () => {
  let ca: TestCa;
  let dir: string;
  const path = (name: string) => join(dir, name);

  /** An RSA-3072 key and a certificate for it, signed by `signer` (or self-signed) with these extensions. */
  function certify(name: string, ext: string, signer?: string, bits = 3072): { key: string; cert: string } {
    const key = path(`${name}.key`);
    const cert = path(`${name}.crt`);
    ossl('genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${bits}`, '-out', key);
    writeFileSync(path(`${name}.ext`), `[v3]\n${ext}\nsubjectKeyIdentifier=hash\n`);
    if (!signer) {
      ossl(
        'req',
        '-x509',
        '-new',
        '-key',
        key,
        '-subj',
        `/O=Elsewhere/CN=${name}`,
        '-days',
        '3650',
        '-sha256',
        '-extensions',
        'v3',
        '-config',
        path(`${name}.cnf`),
        '-out',
        cert,
      );
    } else {
      ossl('req', '-new', '-key', key, '-subj', `/O=Elsewhere/CN=${name}`, '-out', path(`${name}.csr`));
      ossl(
        'x509',
        '-req',
        '-in',
        path(`${name}.csr`),
        '-CA',
        path(`${signer}.crt`),
        '-CAkey',
        path(`${signer}.key`),
        '-CAcreateserial',
        '-days',
        '1000',
        '-sha256',
        '-extfile',
        path(`${name}.ext`),
        '-extensions',
        'v3',
        '-out',
        cert,
      );
    }
    return { key, cert };
  }

  const CA_EXT = 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature';

  beforeAll(async () => {
    ca = await startTestCa();
    dir = tempDir('kw-adopt-').path;
    writeFileSync(
      path('root.cnf'),
      '[req]\ndistinguished_name=dn\n[dn]\n[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n',
    );
    ossl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:3072', '-out', path('root.key'));
    ossl(
      'req',
      '-x509',
      '-new',
      '-key',
      path('root.key'),
      '-subj',
      '/O=Elsewhere/CN=Elsewhere Root',
      '-days',
      '3650',
      '-sha256',
      '-extensions',
      'v3',
      '-config',
      path('root.cnf'),
      '-out',
      path('root.crt'),
    );
  });
  afterAll(async () => ca?.close());

  // In this process, on the serving CA's context (PostgreSQL) or through its admin socket (the
  // embedded database), as an operator's command would reach it.
  const cli = (args: string[]) => runCli(args, ca.env, { context: ca.ctx });
  const issuers = async () => JSON.parse((await cli(['ca', 'issuers', '--json'])).stdout) as IssuerJson[];

  it('a PEM-imported RSA CA under a root given with --trust issues mtls leaves that openssl verifies; CRL and OCSP answer for it', async () => {
    const inter = certify('inter-pem', CA_EXT, 'root');
    const imported = await cli(['kms', 'import', '--key', inter.key, '--cert', inter.cert, '--json']);
    expect(imported.code, imported.stderr).toBe(0);
    const keyId = (JSON.parse(imported.stdout) as { keyId: string }).keyId;

    const adopt = await cli([
      'ca',
      'adopt',
      '--key-id',
      keyId,
      '--cert',
      inter.cert,
      '--trust',
      path('root.crt'),
      '--profiles',
      'mtls',
      '--activate',
      '--json',
    ]);
    expect(adopt.code, adopt.stderr).toBe(0);
    const out = JSON.parse(adopt.stdout) as { issuer: IssuerJson; trustedRoot: IssuerJson };
    expect([out.issuer.kind, out.issuer.state, out.issuer.keyType, out.issuer.profiles]).toEqual([
      'intermediate',
      'active',
      'rsa-3072',
      ['mtls'],
    ]);
    expect([out.trustedRoot.kind, out.trustedRoot.state, out.trustedRoot.keyProtection]).toEqual([
      'root',
      'active',
      'external',
    ]);
    expect(out.issuer.parentId).toBe(out.trustedRoot.id);

    const tree = await cli(['ca', 'issuers']);
    expect(tree.stdout).toMatch(new RegExp(`^root ${out.trustedRoot.id}  active  trusted, key held elsewhere`, 'm'));
    expect(tree.stdout).toMatch(new RegExp(`└ intermediate ${out.issuer.id}  active  rsa-3072 .*profiles: mtls`));
    // Relying parties learn the root from /roots.pem.
    const roots = await (await fetch(`${ca.httpUrl}/roots.pem`)).text();
    expect(roots).toContain(readFileSync(path('root.crt'), 'utf8').trim().split('\n')[1]);

    // The normal issuance path: keyward issue with the profile the adopted issuer serves.
    const { dir: csrDir } = opensslCsr({ san: 'DNS:adopted.internal' });
    const issued = await cli([
      'issue',
      '--csr',
      join(csrDir, 'req.csr'),
      '--profile',
      'mtls',
      '--ttl',
      '48h',
      '--json',
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const leaf = JSON.parse(issued.stdout) as { serial: string; chainPem: string };
    expect(leaf.chainPem).toContain(readFileSync(inter.cert, 'utf8').trim().split('\n')[1]);
    const verified = opensslVerify(readFileSync(path('root.crt'), 'utf8'), leaf.chainPem);
    expect(verified.ok, verified.output).toBe(true);
    const leafPem = leaf.chainPem.slice(0, leaf.chainPem.indexOf('-----END CERTIFICATE-----') + 26);
    const text = opensslText(leafPem);
    expect(text).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(text).toContain(`URI:${ca.httpUrl}/crl/${out.issuer.id}.crl`);

    // Revoked, it is on the adopted issuer's CRL (signed with its RSA key) and OCSP says so.
    const revoke = await cli(['revoke', leaf.serial, '--reason', 'keyCompromise']);
    expect(revoke.code, revoke.stderr).toBe(0);
    const publisher = new RevocationPublisher(ca.ctx, 'test');
    await publisher.ensureSigners();
    await publisher.publishCrls({ force: true });
    // Served once the server has taken in the published CRL (it learns of it as other replicas do).
    const crl = await waitFor('the adopted issuer’s CRL', async () => {
      const r = await fetch(`${ca.httpUrl}/crl/${out.issuer.id}.crl`);
      return r.status === 200 ? r : undefined;
    });
    writeFileSync(path('adopted.crl'), new Uint8Array(await crl.arrayBuffer()));
    writeFileSync(path('chain.pem'), readFileSync(inter.cert, 'utf8') + readFileSync(path('root.crt'), 'utf8'));
    const crlText = openssl([
      'crl',
      '-inform',
      'DER',
      '-in',
      path('adopted.crl'),
      '-CAfile',
      path('chain.pem'),
      '-verify',
      '-noout',
      '-text',
    ]);
    expect(`${crlText.stdout}${crlText.stderr}`).toContain('verify OK');
    expect(crlText.stdout).toContain('sha256WithRSAEncryption');
    expect(crlText.stdout).toContain(`Serial Number: ${leaf.serial.toUpperCase()}`);
    writeFileSync(path('leaf.pem'), leafPem);
    const ocsp = await waitFor('an OCSP answer', async () => {
      const r = await opensslOcsp(ca, { root: path('root.crt'), inter: inter.cert }, ['-cert', path('leaf.pem')]);
      return r.ok && /: (good|revoked)/.test(r.out) ? r.out : undefined;
    });
    expect(ocsp).toContain(': revoked');
  }, 120_000);

  it('an RSA-OAEP-wrapped import under the now trusted root is adopted without --trust and signs', async () => {
    const inter = certify('inter-wrapped', CA_EXT, 'root');
    const params = await cli(['kms', 'import-params', '--usage', 'intermediate', '--json']);
    expect(params.code, params.stderr).toBe(0);
    const { wrappingPublicKeyPem, importToken, keyId } = JSON.parse(params.stdout) as {
      wrappingPublicKeyPem: string;
      importToken: string;
      keyId: string;
    };
    const blob = wrapForImport(dir, wrappingPublicKeyPem, inter.key, 'inter-wrapped');
    const imported = await cli(['kms', 'import', '--wrapped', blob, '--token', importToken, '--cert', inter.cert]);
    expect(imported.code, imported.stderr).toBe(0);

    const adopt = await cli(['ca', 'adopt', '--key-id', keyId, '--cert', inter.cert, '--json']);
    expect(adopt.code, adopt.stderr).toBe(0);
    const out = JSON.parse(adopt.stdout) as { issuer: IssuerJson; trustedRoot?: IssuerJson };
    expect(out.issuer.state).toBe('pending');
    expect(out.trustedRoot).toBeUndefined();
    const act = await cli(['ca', 'activate', out.issuer.id]);
    expect(act.code, act.stderr).toBe(0);

    // A default issuer now: it takes tls-server over from init's intermediate.
    const { dir: csrDir } = opensslCsr({ san: 'DNS:wrapped.internal' });
    const issued = await cli(['issue', '--csr', join(csrDir, 'req.csr'), '--json']);
    expect(issued.code, issued.stderr).toBe(0);
    const chain = (JSON.parse(issued.stdout) as { chainPem: string }).chainPem;
    expect(chain).toContain(readFileSync(inter.cert, 'utf8').trim().split('\n')[1]);
    expect(opensslVerify(readFileSync(path('root.crt'), 'utf8'), chain).ok).toBe(true);
    expect(opensslText(chain)).toContain('sha256WithRSAEncryption');
  }, 120_000);

  it('refuses a key that is not the certificate’s, a certificate that is not a CA, and an unknown root; nothing changes', async () => {
    // RSA-2048 here: these keys only need to exist, and they are many.
    const a = certify('mismatch-a', CA_EXT, 'root', 2048);
    const b = certify('mismatch-b', CA_EXT, 'root', 2048);
    const leaf = certify(
      'not-a-ca',
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature',
      'root',
      2048,
    );
    const noSign = certify(
      'no-keycertsign',
      'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature',
      'root',
      2048,
    );
    const keyOf = async (c: { key: string; cert: string }) => {
      const r = await cli(['kms', 'import', '--key', c.key, '--cert', c.cert, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { keyId: string }).keyId;
    };
    const keyA = await keyOf(a);
    const keyLeaf = await keyOf(leaf);
    const keyNoSign = await keyOf(noSign);
    // A CA elsewhere whose root we were never told of.
    writeFileSync(path('other.cnf'), readFileSync(path('root.cnf')));
    certify('other', 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign', undefined, 2048);
    const stranger = certify('stranger', CA_EXT, 'other', 2048);
    const keyStranger = await keyOf(stranger);

    const db = ca.ctx.database.db;
    const counts = async () => ({
      issuers: (await db.selectFrom('issuers').select('id').execute()).length,
      // The server's own background work (OCSP answers, CRLs) appends events meanwhile; only these count.
      adoptions: (
        await db
          .selectFrom('audit_events')
          .select('seq')
          .where('action', 'in', ['adopt-issuer', 'trust-root'])
          .execute()
      ).length,
    });
    {
      const before = await counts();
      const mismatch = await cli(['ca', 'adopt', '--key-id', keyA, '--cert', b.cert]);
      expect(mismatch.code).toBe(1);
      expect(mismatch.stderr).toMatch(
        new RegExp(
          `keyward: KeyMismatch: key ${keyA} \\(rsa-2048, SPKI SHA-256 [0-9a-f]{16}…\\) does not match the certificate's public key`,
        ),
      );
      const notCa = await cli(['ca', 'adopt', '--key-id', keyLeaf, '--cert', leaf.cert, '--json']);
      expect(notCa.code).toBe(1);
      expect(JSON.parse(notCa.stderr)).toMatchObject({
        error: { kind: 'malformed', code: 'NotACa', detail: expect.stringContaining('basicConstraints cA is not set') },
      });
      const lacks = await cli(['ca', 'adopt', '--key-id', keyNoSign, '--cert', noSign.cert]);
      expect(lacks.code).toBe(1);
      expect(lacks.stderr).toContain('is not a CA certificate: its keyUsage lacks keyCertSign');
      const unknown = await cli(['ca', 'adopt', '--key-id', keyStranger, '--cert', stranger.cert]);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toContain('which is not a root this CA holds; give that root with --trust FILE');
      const selfSigned = await cli(['ca', 'adopt', '--key-id', keyA, '--cert', path('root.crt')]);
      expect(selfSigned.stderr).toContain('is self-signed, a root');
      expect(await counts()).toEqual(before);
    }
    expect((await issuers()).filter((i) => i.kind === 'intermediate')).toHaveLength(3);
  }, 180_000);
});
