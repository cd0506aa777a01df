import { constants, createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { insertIssuer } from '../../src/ca/authority.ts';
import { buildSubordinateCa } from '../../src/ca/ca-builder.ts';
import { toPem } from '../../src/ca/pem.ts';
import { kmsCommands } from '../../src/cli/kms-commands.ts';
import { commandsByName } from '../../src/cli/registry.ts';
import type { AppContext } from '../../src/context.ts';
import { derToRaw, rawToDer } from '../../src/kms/ecdsa-signature.ts';
import type { KeyDetail } from '../../src/kms/inventory.ts';
import type { AsymmetricAlg } from '../../src/kms/key-types.ts';
import type { RsaScheme } from '../../src/kms/signer.ts';
import { KeyStates } from '../../src/kms/states.ts';
import { issue, startAcmeEnv } from '../support/acme.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { opensslText, opensslVerify } from '../support/openssl.ts';
import { createTestToken, type TestToken } from '../support/softhsm.ts';
import { issueLeaf, kmsCli, restart } from './helpers.ts';

// Before anything in this process touches PKCS#11: SoftHSM reads SOFTHSM2_CONF once.
const token: TestToken = createTestToken();
const hsmSettings = { kms: { hsm: token.settings } };

/** An intermediate whose key is made in the token, signed by the root, and made the active issuer. */
async function addHsmIntermediate(ctx: AppContext, alg: AsymmetricAlg, rsaScheme?: RsaScheme) {
  const db = ctx.database.db;
  const root = await db.selectFrom('issuers').selectAll().where('kind', '=', 'root').executeTakeFirstOrThrow();
  const rootSigner = await ctx.kms.signer(root.key_id!, 'sign-certificate', 'test');
  const key = await ctx.kms.createKey(db, {
    usage: 'intermediate',
    alg,
    principal: 'test',
    protection: 'hsm',
    rsaScheme,
  });
  const now = Date.now();
  const der = await buildSubordinateCa(
    {
      serial: randomBytes(16).map((b, i) => (i === 0 ? b & 0x7f : b)),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 30 * 86_400_000),
      subject: { commonName: `HSM Intermediate ${alg}${rsaScheme ? ` ${rsaScheme}` : ''}`, organization: 'Keyward' },
      subjectPublicKeyInfo: new Uint8Array(key.publicKey.export({ type: 'spki', format: 'der' })),
      pathLength: 0,
    },
    { certificate: root.certificate, signer: rootSigner },
  );
  const issuer = await insertIssuer(db, { kind: 'intermediate', parentId: root.id, keyId: key.id, der });
  return { keyId: key.id, issuer, rootPem: toPem(root.certificate) };
}

describe('ECDSA signature encodings', () => {
  it('r‖s and DER convert both ways, and agree with what node produces', () => {
    for (const [curve, width] of [
      ['prime256v1', 32],
      ['secp384r1', 48],
    ] as const) {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      for (let i = 0; i < 50; i++) {
        const data = randomBytes(40);
        const raw = sign(null, data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der = rawToDer(raw);
        expect(verify(null, data, publicKey, der)).toBe(true);
        expect(Buffer.from(derToRaw(der, width))).toEqual(raw);
        const nodeDer = sign(null, data, privateKey);
        expect(Buffer.from(rawToDer(derToRaw(nodeDer, width)))).toEqual(nodeDer);
      }
    }
    expect(() => rawToDer(new Uint8Array(63))).toThrow(/not valid/);
    expect(() => derToRaw(Uint8Array.of(0x30, 0x03, 0x02, 0x01), 32)).toThrow(/not a DER ECDSA signature/);
  });
});

describe('HSM-resident keys (SoftHSM2)', () => {
  let ca: TestCa;
  let ctx: AppContext;
  beforeAll(async () => {
    ca = await startTestCa({ serve: false, settings: hsmSettings });
    ctx = ca.ctx;
  });
  afterAll(async () => {
    await ca?.close();
  });

  it('kms create --protection hsm makes a sensitive, never extractable key in the token; the database holds no key material', async () => {
    const created = await kmsCli<{ id: string; protection: string; publicKeyPem: string }>(ctx, ['kms', 'create'], {
      usage: 'intermediate',
      alg: 'ecdsa-p384',
      protection: 'hsm',
    });
    expect(created.protection).toBe('hsm');
    const objects = token.listObjects('privkey');
    const entry = objects.split(/\n(?=Private Key Object)/).find((o) => o.includes(`keyward-${created.id}`));
    expect(entry, objects).toBeDefined();
    expect(entry).toMatch(/Access:\s+sensitive, always sensitive, never extractable/);

    // CKA_EXTRACTABLE false and CKA_SENSITIVE true, read back through PKCS#11 by the key hierarchy's own code.
    const { tokenKeyAttributes } = await import('../../src/kms/pkcs11/token-keys.ts');
    const { sessionPool } = await import('../../src/kms/pkcs11/session-pool.ts');
    const { pinFromFile } = await import('../../src/kms/pkcs11/module.ts');
    const pool = sessionPool({
      module: token.settings.module,
      token: token.label,
      pin: pinFromFile(token.pinFile, token.label),
    });
    const detail = await kmsCli<KeyDetail>(ctx, ['kms', 'show'], {}, [created.id]);
    expect(detail.protection).toBe('hsm');
    expect(detail.token).toMatchObject({ token: token.label, label: `keyward-${created.id}` });
    expect(await tokenKeyAttributes(pool, detail.token!)).toMatchObject({
      extractable: false,
      sensitive: true,
      neverExtractable: true,
      alwaysSensitive: true,
    });
    // The token refuses to hand out the private value at all.
    await expect(
      pool.run('reading CKA_VALUE', (s) => {
        s.m.C_FindObjectsInit(s.session, [
          { type: s.lib.CKA_CLASS, value: s.lib.CKO_PRIVATE_KEY },
          { type: s.lib.CKA_ID, value: Buffer.from(detail.token!.id, 'hex') },
        ]);
        const [h] = s.m.C_FindObjects(s.session, 1);
        s.m.C_FindObjectsFinal(s.session);
        return s.m.C_GetAttributeValue(s.session, h!, [{ type: s.lib.CKA_VALUE }]);
      }),
    ).rejects.toThrow(/CKR_ATTRIBUTE_SENSITIVE/);

    // The row: public key and where the key is; no DEK, no ciphertext.
    const row = await ctx.database.db
      .selectFrom('kms_keys')
      .selectAll()
      .where('id', '=', created.id)
      .executeTakeFirstOrThrow();
    expect(row.backend).toBe('hsm');
    expect(row.dek_wrapped).toBeNull();
    expect(row.key_ciphertext).toBeNull();
    expect(row.kek_id).toBeNull();
    expect(Object.keys(row.token_ref as object).sort()).toEqual(['attributes', 'id', 'label', 'token']);
    expect(
      createPublicKey({ key: Buffer.from(row.spki!), format: 'der', type: 'spki' }).export({
        type: 'spki',
        format: 'pem',
      }),
    ).toBe(created.publicKeyPem);
    const events = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('key_id', '=', created.id)
      .execute();
    expect(events.map((e) => e.action)).toEqual(['create-key']);
    expect(events[0]!.context).toMatchObject({ protection: 'hsm', extractable: false, sensitive: true });

    // Rewrap has nothing to move for it, and says why.
    await expect(kmsCli(ctx, ['kms', 'rewrap'], {}, [created.id])).rejects.toThrow(
      /is an HSM key: its private key never leaves the token, so there is no DEK to rewrap/,
    );
  });

  it.each([
    ['ecdsa-p256', undefined, 'ecdsa-sha256'],
    ['ecdsa-p384', undefined, 'ecdsa-sha384'],
    ['rsa-2048', 'pkcs1', 'rsa-sha256'],
    ['rsa-2048', 'pss', 'rsa-pss-sha256'],
  ] as const)('%s %s signs in the token through the Signer (%s), audited', async (alg, scheme, algorithm) => {
    const key = await ctx.kms.createKey(ctx.database.db, {
      usage: 'intermediate',
      alg,
      principal: 'test',
      protection: 'hsm',
      rsaScheme: scheme,
    });
    const signer = await ctx.kms.signer(key.id, 'sign-certificate', 'test');
    expect(signer.algorithm).toBe(algorithm);
    const data = randomBytes(2000);
    const signature = await signer.sign(data, { purpose: 'test' });
    const ok =
      algorithm === 'rsa-pss-sha256'
        ? verify(
            'sha256',
            data,
            { key: key.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
            signature,
          )
        : verify(algorithm === 'ecdsa-sha384' ? 'sha384' : 'sha256', data, key.publicKey, signature);
    expect(ok).toBe(true);
    const used = await ctx.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('key_id', '=', key.id)
      .where('action', '=', 'sign-certificate')
      .execute();
    expect(used.map((e) => [e.outcome, e.context])).toEqual([['success', { purpose: 'test', protection: 'hsm' }]]);
  });

  it('an HSM intermediate (ECDSA and RSA-PSS) issues leaves through the normal issue path; openssl verifies the chains', async () => {
    for (const [alg, scheme] of [
      ['ecdsa-p256', undefined],
      ['rsa-3072', 'pss'],
    ] as const) {
      const { issuer, rootPem } = await addHsmIntermediate(ctx, alg, scheme);
      // The CA picks its newest active intermediate when it first issues, so a restart sees this one.
      ctx = ca.ctx = await restart(ctx, ca.configFile, ca.env);
      const leaf = await issueLeaf(ctx, `hsm-${alg}.internal`);
      expect(leaf.issuerId).toBe(issuer.id);
      const result = opensslVerify(rootPem, leaf.chainPem);
      expect(result.ok, result.output).toBe(true);
      if (scheme === 'pss')
        expect(opensslText(leaf.chainPem)).toMatch(/Signature Algorithm: rsassaPss[\s\S]*Salt Length: 0x20/);
    }
  });

  it('a token taken away gives a clear error and signing resumes when it returns; so does a re-initialised token restored from backup', async () => {
    const { keyId } = await addHsmIntermediate(ctx, 'ecdsa-p256');
    const signer = await ctx.kms.signer(keyId, 'sign-crl', 'test');
    await signer.sign(randomBytes(32));

    token.remove();
    try {
      await expect(signer.sign(randomBytes(32))).rejects.toThrow(
        /token "keyward-hsm"|no PKCS#11 token labelled "keyward-hsm"/,
      );
      const failed = await ctx.database.db
        .selectFrom('audit_events')
        .select(['outcome', 'error_code'])
        .where('key_id', '=', keyId)
        .orderBy('seq', 'desc')
        .executeTakeFirstOrThrow();
      expect(failed).toEqual({ outcome: 'failure', error_code: 'KeyUnavailable' });
    } finally {
      token.restore();
    }
    await expect
      .poll(
        () =>
          signer.sign(randomBytes(32)).then(
            () => 'signed',
            (e: Error) => e.message,
          ),
        { timeout: 10_000 },
      )
      .toBe('signed');

    const putBack = token.reinitialise();
    try {
      await expect(signer.sign(randomBytes(32))).rejects.toThrow(
        new RegExp(
          `the private key "keyward-${keyId}" \\(CKA_ID [0-9a-f]+\\) is not in token "keyward-hsm": the token was re-initialised`,
        ),
      );
    } finally {
      putBack();
    }
    await expect
      .poll(
        () =>
          signer.sign(randomBytes(32)).then(
            () => 'signed',
            (e: Error) => e.message,
          ),
        { timeout: 10_000 },
      )
      .toBe('signed');
  });

  it('kms show says where the key is; once its deletion window has passed, the janitor deletes it from the token', async () => {
    const created = await kmsCli<{ id: string }>(ctx, ['kms', 'create'], { usage: 'ocsp', protection: 'hsm' });
    const show = kmsCommands.find((c) => c.path.join(' ') === 'kms show')!;
    const text = show.format(await kmsCli(ctx, ['kms', 'show'], {}, [created.id]));
    expect(text).toContain('protection hsm (private key in a PKCS#11 token, never extractable)');
    expect(text).toMatch(new RegExp(`token keyward-hsm  label keyward-${created.id}  CKA_ID [0-9a-f]{32}`));
    expect(text).toContain('extractable=false sensitive=true');
    expect(token.listObjects('privkey')).toContain(`keyward-${created.id}`);

    await kmsCli(ctx, ['kms', 'schedule-deletion'], { days: '7' }, [created.id]);
    await ctx.database.db
      .updateTable('kms_keys')
      .set({ deletion_at: new Date(Date.now() - 1000) })
      .where('id', '=', created.id)
      .execute();
    const destroyed = await new KeyStates(ctx.kms, ctx.database.db).destroyDue();
    expect(destroyed.keys).toContain(created.id);
    expect(token.listObjects('privkey')).not.toContain(`keyward-${created.id}`);
    expect(token.listObjects('pubkey')).not.toContain(`keyward-${created.id}`);
  });

  it('without kms.hsm, protection hsm is refused with what to configure', async () => {
    const plain = await startTestCa({ serve: false });
    try {
      await expect(kmsCli(plain.ctx, ['kms', 'create'], { usage: 'intermediate', protection: 'hsm' })).rejects.toThrow(
        /protection "hsm" needs kms.hsm in the configuration/,
      );
      await expect(kmsCli(plain.ctx, ['kms', 'create'], { alg: 'ed25519', protection: 'hsm' })).rejects.toThrow(
        /needs kms.hsm|only available with protection "wrapped"/,
      );
    } finally {
      await plain.close();
    }
  });
});

describe('an HSM intermediate behind ACME', () => {
  it('acme-client gets a certificate signed in the token; openssl verifies it', async () => {
    const setup = await startTestCa({ serve: false, settings: hsmSettings });
    const { issuer, keyId } = await addHsmIntermediate(setup.ctx, 'ecdsa-p384');
    await setup.ctx.close();
    const env = await startAcmeEnv({ store: setup.store, settings: hsmSettings });
    try {
      const client = await env.client();
      await client.createAccount({ termsOfServiceAgreed: true });
      const { certPem } = await issue(env, client, [{ type: 'dns', value: 'hsm.example.test' }], 'http-01');
      const verified = opensslVerify(env.ca.rootPem, certPem);
      expect(verified.ok, verified.output).toBe(true);
      expect(certPem).toContain(toPem(issuer.certificate).trim());
      const signed = await env.ca.ctx.database.db
        .selectFrom('audit_events')
        .select('context')
        .where('key_id', '=', keyId)
        .where('action', '=', 'sign-certificate')
        .execute();
      expect(signed.some((e) => (e.context as Record<string, string>).protection === 'hsm')).toBe(true);
    } finally {
      await env.close();
      await setup.store.cleanup();
    }
  });
});

describe('keyward ca add-intermediate --protection hsm', () => {
  it('makes an intermediate whose key is generated in the token; ACME issues under it and openssl verifies the chain', async () => {
    const setup = await startTestCa({ serve: false, settings: hsmSettings });
    const add = commandsByName.get('ca.add-intermediate')!;
    const input = await add.input(
      { protection: 'hsm', 'key-type': 'ecdsa-p384', profiles: ['tls-server'], activate: true },
      [],
    );
    const added = (await add.run(setup.ctx, { ...input, principal: 'cli:test' })) as { id: string; state: string };
    expect(added.state).toBe('active');
    const row = await setup.ctx.database.db
      .selectFrom('issuers')
      .select(['key_id', 'certificate'])
      .where('id', '=', added.id)
      .executeTakeFirstOrThrow();
    const detail = await kmsCli<KeyDetail>(setup.ctx, ['kms', 'show'], {}, [row.key_id!]);
    expect(detail.protection).toBe('hsm');
    const entry = token
      .listObjects('privkey')
      .split(/\n(?=Private Key Object)/)
      .find((o) => o.includes(`keyward-${row.key_id}`));
    expect(entry).toMatch(/Access:\s+sensitive, always sensitive, never extractable/);
    await setup.ctx.close();

    const env = await startAcmeEnv({ store: setup.store, settings: hsmSettings });
    try {
      const client = await env.client();
      await client.createAccount({ termsOfServiceAgreed: true });
      const { certPem } = await issue(env, client, [{ type: 'dns', value: 'hsm-issuer.example.test' }], 'http-01');
      expect(certPem).toContain(toPem(row.certificate).trim());
      const verified = opensslVerify(env.ca.rootPem, certPem);
      expect(verified.ok, verified.output).toBe(true);
    } finally {
      await env.close();
      await setup.store.cleanup();
    }
  });
});

// PGlite admits one process, so two replicas on one database need PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('two replicas with one HSM intermediate', () => {
  it('disabling the key stops issuance on both replicas at once', async () => {
    const a = await startTestCa({ serve: false, settings: hsmSettings });
    const { keyId } = await addHsmIntermediate(a.ctx, 'ecdsa-p256');
    const b = await startTestCa({ serve: false, store: a.store, settings: hsmSettings });
    try {
      expect((await issueLeaf(a.ctx, 'one.internal')).issuerId).toBe((await issueLeaf(b.ctx, 'two.internal')).issuerId);
      const issuer = await a.ctx.database.db
        .selectFrom('issuers')
        .select('key_id')
        .where('kind', '=', 'intermediate')
        .orderBy('created_at', 'desc')
        .executeTakeFirstOrThrow();
      expect(issuer.key_id).toBe(keyId);
      await kmsCli(a.ctx, ['kms', 'disable'], {}, [keyId]);
      await expect(issueLeaf(a.ctx, 'three.internal')).rejects.toThrow(/is Disabled and cannot sign/);
      await expect(issueLeaf(b.ctx, 'four.internal')).rejects.toThrow(/is Disabled and cannot sign/);
      await kmsCli(b.ctx, ['kms', 'enable'], {}, [keyId]);
      await issueLeaf(a.ctx, 'five.internal');
    } finally {
      await b.ctx.close();
      await a.close();
    }
  });
});
