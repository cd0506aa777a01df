import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  activateIssuer,
  addIntermediate,
  type IssuerLifecycleDeps,
  retireIssuer,
  rotateIntermediate,
} from '../../src/ca/issuer-lifecycle.ts';
import { chooseIssuer } from '../../src/ca/issuers.ts';
import { toPem } from '../../src/ca/pem.ts';
import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import type { IssuerRow } from '../../src/db/schema.ts';
import { issueLeaf, opensslOcsp, pemFiles, waitFor } from '../revocation/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { opensslText, opensslVerify } from '../support/openssl.ts';
import { openssl } from '../support/pki.ts';

const row = (id: string, over: Partial<IssuerRow>): IssuerRow =>
  ({
    id,
    kind: 'intermediate',
    state: 'active',
    profiles: [],
    state_changed_at: new Date(0),
    ...over,
  }) as IssuerRow;

describe('issuer choice', () => {
  it('a profile goes to the issuer naming it, else to the default; the last activated wins', () => {
    const rows = [
      row('a', { state_changed_at: new Date(1) }),
      row('b', { profiles: ['mtls'], state_changed_at: new Date(2) }),
      row('c', { state_changed_at: new Date(3) }),
      row('d', { state: 'retiring', state_changed_at: new Date(9) }),
      row('e', { state: 'pending', profiles: ['tls-server'], state_changed_at: new Date(9) }),
      row('r', { kind: 'root', state_changed_at: new Date(9) }),
    ];
    expect(chooseIssuer(rows, 'mtls')?.id).toBe('b');
    expect(chooseIssuer(rows, 'tls-server')?.id).toBe('c');
    expect(
      chooseIssuer(
        rows.filter((r) => r.id !== 'c'),
        'tls-server',
      )?.id,
    ).toBe('a');
    expect(
      chooseIssuer(
        rows.filter((r) => r.id === 'b' || r.id === 'd'),
        'tls-server',
      ),
    ).toBeUndefined();
  });
});

// Issuers with a life, on a serving CA: CRLs, OCSP and caIssuers fetched as relying parties do.
describe('intermediates: add, activate, rotate, retire', () => {
  let ca: TestCa;
  let deps: IssuerLifecycleDeps;
  let files: Awaited<ReturnType<typeof pemFiles>>;

  beforeAll(async () => {
    ca = await startTestCa();
    deps = {
      db: ca.ctx.database.db,
      kms: ca.ctx.kms,
      registry: ca.ctx.ca.registry,
      profiles: [...ca.ctx.config.profiles.keys()],
      organization: 'Keyward',
    };
    files = await pemFiles(ca);
  });
  afterAll(async () => {
    files?.cleanup();
    await ca?.close();
  });

  const issuer = async (id: string) => (await ca.ctx.ca.issuers()).find((i) => i.id === id)!;

  it('init wrote the root and the intermediate as active issuers, the intermediate the default', async () => {
    const rows = await ca.ctx.ca.issuers();
    expect(rows.map((r) => [r.kind, r.state, r.profiles])).toEqual([
      ['root', 'active', []],
      ['intermediate', 'active', []],
    ]);
    expect((await ca.ctx.ca.issuerForProfile('tls-server')).id).toBe(rows[1]!.id);
  });

  it('a pending intermediate signs nothing; activated for mtls it signs mtls only, with its own AIA, CRL and AKI', async () => {
    const before = (await ca.ctx.ca.issuerForProfile('mtls')).id;
    const added = await addIntermediate(
      deps,
      { keyType: 'ecdsa-p384', lifetimeMs: 2 * 365 * 86_400_000, commonName: 'Keyward mTLS CA', profiles: ['mtls'] },
      'test',
    );
    expect(added.state).toBe('pending');
    expect((await issueLeaf(ca, { profile: 'mtls' })).issuerId).toBe(before);

    await activateIssuer(deps, added.id, 'test');
    const mtls = await issueLeaf(ca, { profile: 'mtls', lifetimeMs: 48 * 3600_000 });
    const server = await issueLeaf(ca);
    expect(mtls.issuerId).toBe(added.id);
    expect(server.issuerId).toBe(before);

    const chain = mtls.chainPem;
    expect(opensslVerify(ca.rootPem, chain).ok).toBe(true);
    const text = opensslText(mtls.pem);
    expect(text).toContain(`CA Issuers - URI:${ca.httpUrl}/issuers/${added.id}.cer`);
    expect(text).toContain(`URI:${ca.httpUrl}/crl/${added.id}.crl`);
    const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
    expect(aki?.replace(/:/g, '').toLowerCase()).toBe(Buffer.from(added.ski).toString('hex'));

    const cer = await fetch(`${ca.httpUrl}/issuers/${added.id}.cer`);
    expect(cer.headers.get('content-type')).toBe('application/pkix-cert');
    expect(Buffer.from(await cer.arrayBuffer()).equals(Buffer.from(added.certificate))).toBe(true);
    expect((await fetch(`${ca.httpUrl}/issuers/0000000000000000.cer`)).status).toBe(404);
  });

  it('rotation: new leaves chain to the new intermediate, old ones still verify; CRLs and OCSP answer for both', async () => {
    const old = await ca.ctx.ca.issuerForProfile('tls-server');
    const oldLeaf = await issueLeaf(ca, { name: 'old.internal' });
    const revoked = await issueLeaf(ca, { name: 'revoked.internal' });
    const { old: retiring, new: made } = await rotateIntermediate(deps, old.id, {}, 'test');
    expect(retiring.state).toBe('retiring');
    expect(made.state).toBe('active');
    expect(made.replaces).toBe(old.id);
    expect(made.subject).toBe(old.subject);

    const newLeaf = await issueLeaf(ca, { name: 'new.internal' });
    expect(newLeaf.issuerId).toBe(made.id);
    expect(newLeaf.chainPem).toContain(toPem(made.certificate));
    expect(opensslVerify(ca.rootPem, newLeaf.chainPem).ok).toBe(true);
    expect(opensslVerify(ca.rootPem, oldLeaf.chainPem).ok).toBe(true);
    // mtls stays with the issuer that names it.
    expect((await issueLeaf(ca, { profile: 'mtls' })).issuerId).not.toBe(made.id);

    // A certificate of the retiring issuer can still be revoked, and its CRL and OCSP say so.
    await ca.ctx.ca.revoke(revoked.serial, 1, 'test');
    const service = new RevocationPublisher(ca.ctx, 'test');
    await service.ensureSigners();
    // The server publishes too (a rotation starts its CRL work at once) and an issuer's CRL is
    // published by one publisher at a time, so a round may pass one over: publish until each
    // issuer's CRL has been made by a round that began after the revocation.
    const published = new Set<string>();
    await waitFor('CRLs of both issuers', async () => {
      for (const p of (await service.publishCrls({ force: true })).published) published.add(p.issuerId);
      return published.has(old.id) && published.has(made.id);
    });
    for (const [id, cert, serial] of [
      [old.id, old.certificate, revoked.serial],
      [made.id, made.certificate, undefined],
    ] as const) {
      const res = await fetch(`${ca.httpUrl}/crl/${id}.crl`);
      expect(res.status).toBe(200);
      const crl = files.file(`crl-${id}.der`, new Uint8Array(await res.arrayBuffer()));
      const caFile = files.file(`ca-${id}.pem`, toPem(cert) + ca.rootPem);
      const out = openssl(['crl', '-inform', 'DER', '-in', crl, '-CAfile', caFile, '-verify', '-noout', '-text']);
      expect(`${out.stdout}${out.stderr}`).toContain('verify OK');
      if (serial) expect(out.stdout).toContain(`Serial Number: ${serial.toUpperCase()}`);
    }

    const ocsp = async (issuerCert: Uint8Array, leaf: { pem: string; serial: string }) => {
      const inter = files.file(`i-${leaf.serial}.pem`, toPem(issuerCert));
      const cert = files.file(`l-${leaf.serial}.pem`, leaf.pem);
      return waitFor('an OCSP answer', async () => {
        const r = await opensslOcsp(ca, { root: files.root, inter }, ['-cert', cert]);
        return r.ok && /: (good|revoked)/.test(r.out) ? r.out : undefined;
      });
    };
    expect(await ocsp(old.certificate, oldLeaf)).toContain(': good');
    expect(await ocsp(old.certificate, revoked)).toContain(': revoked');
    expect(await ocsp(made.certificate, newLeaf)).toContain(': good');
  });

  it('rotation copies the name constraints; retiring the last issuer of a profile is refused and changes nothing', async () => {
    const constrained = await addIntermediate(
      deps,
      {
        keyType: 'ecdsa-p256',
        lifetimeMs: 365 * 86_400_000,
        commonName: 'Keyward Shortlived CA',
        profiles: ['shortlived'],
        nameConstraints: { permittedDns: ['svc.internal'], permittedIp: ['10.0.0.0/8'] },
      },
      'test',
      true,
    );
    const { new: next } = await rotateIntermediate(deps, constrained.id, { keyType: 'ecdsa-p384' }, 'test');
    const text = opensslText(toPem(next.certificate));
    expect(text).toMatch(/Permitted:\s*\n\s*DNS:svc.internal\s*\n\s*IP:10.0.0.0\/255.0.0.0/);
    expect(text).toContain('ASN1 OID: secp384r1');
    await expect(issueLeaf(ca, { profile: 'shortlived', name: 'outside.example' })).rejects.toThrow(
      /outside the issuing CA's name constraints/,
    );

    // tls-server has only the default issuer; mtls and shortlived have their own.
    const fallback = await ca.ctx.ca.issuerForProfile('tls-server');
    // Only the operator's events: background work audits as `keyward` (such as the OCSP signer it
    // makes for the rotated intermediate as soon as it hears of it).
    const operatorEvents = () =>
      ca.ctx.database.db.selectFrom('audit_events').select('seq').where('principal', '=', 'test').execute();
    const before = await operatorEvents();
    await expect(retireIssuer(deps, fallback.id, 'test')).rejects.toThrow(/would leave profile "tls-server"/);
    expect((await issuer(fallback.id)).state).toBe('active');
    const after = await operatorEvents();
    expect(after.length).toBe(before.length);
  });

  it('an issuer near its end makes /health degraded with the reason; retired with no certificates, it stops counting', async () => {
    const spare = await addIntermediate(
      deps,
      { keyType: 'ecdsa-p256', lifetimeMs: 100 * 86_400_000, commonName: 'Spare', profiles: [] },
      'test',
      true,
    );
    // 100 days left (< 180): /health says so, still answering 200.
    const degraded = await fetch(`${ca.httpUrl}/health`);
    expect(degraded.status).toBe(200);
    const body = (await degraded.json()) as { status: string; warnings: string[] };
    expect(body.status).toBe('degraded');
    expect(body.warnings).toEqual([
      expect.stringMatching(
        new RegExp(
          `^intermediate ${spare.id} expires .* \\(99 days left\\); keyward ca rotate-intermediate ${spare.id}$`,
        ),
      ),
    ]);
    expect((await retireIssuer(deps, spare.id, 'test')).state).toBe('retired');
    expect(await (await fetch(`${ca.httpUrl}/health`)).json()).toMatchObject({ status: 'ok' });
    await expect(activateIssuer(deps, spare.id, 'test')).rejects.toThrow(/retired and cannot sign again/);
    await expect(activateIssuer(deps, '0123456789abcdef', 'test')).rejects.toMatchObject({ kind: 'notFound' });
  });
});

// PGlite admits one process, so two replicas on one database need PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('two replicas on one database', () => {
  let a: TestCa;
  let b: TestCa;

  beforeAll(async () => {
    a = await startTestCa({ serve: false });
    b = await startTestCa({ serve: false, store: a.store });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it('a rotation on one is used by the other at once, without a restart', async () => {
    const stops = [
      await a.ctx.ca.followIssuers(a.ctx.database.listen),
      await b.ctx.ca.followIssuers(b.ctx.database.listen),
    ];
    try {
      const old = await b.ctx.ca.issuerForProfile('tls-server');
      expect((await issueLeaf(b)).issuerId).toBe(old.id);
      const deps = {
        db: a.ctx.database.db,
        kms: a.ctx.kms,
        registry: a.ctx.ca.registry,
        profiles: [...a.ctx.config.profiles.keys()],
        organization: 'Keyward',
      };
      const { new: made } = await rotateIntermediate(deps, old.id, {}, 'test');
      // The notice travels after the commit; it takes milliseconds.
      await waitFor(
        'replica b to see the rotation',
        async () => (await b.ctx.ca.issuerForProfile('tls-server')).id === made.id,
        5_000,
      );
      const leaf = await issueLeaf(b);
      expect(leaf.issuerId).toBe(made.id);
      expect(opensslVerify(b.rootPem, leaf.chainPem).ok).toBe(true);
    } finally {
      for (const stop of stops) await stop();
    }
  });
});
