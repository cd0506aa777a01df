import { X509Certificate } from 'node:crypto';
import type { Server } from 'node:net';

import type * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { toPem } from '../../src/ca/pem.ts';
import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import { opensslOcsp, waitFor } from '../revocation/helpers.ts';
import { type AcmeTestEnv, issue, startAcmeEnv } from '../support/acme.ts';
import { portOf, roundRobin } from '../support/balancer.ts';
import { freePort } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { opensslVerify } from '../support/openssl.ts';
import { openssl, tempDir } from '../support/pki.ts';

const WORKERS = 4;

interface Flow {
  worker: number;
  client: acme.Client;
  startedAt: number;
  certPem?: string;
  error?: string;
}

const blocks = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((b) => `${b}\n`);
const serialOf = (pem: string) => new X509Certificate(blocks(pem)[0]!).serialNumber;

// The intermediate is rotated with `keyward ca rotate-intermediate` while ACME clients keep
// ordering. On PostgreSQL two replicas share the database behind a round-robin balancer, and the
// command runs in a context of its own (as from another host), so the replicas learn of it only
// by NOTIFY; PGlite admits one process, so there one replica serves and the command reaches it
// through its admin socket.
describe('rotating the intermediate while ACME clients issue', () => {
  const replicated = !!process.env.DATABASE_URL;
  let envs: AcmeTestEnv[] = [];
  let lb: { server: Server } | undefined;
  let files: ReturnType<typeof tempDir>;

  beforeAll(async () => {
    files = tempDir('kw-rotation-load-');
    if (!replicated) {
      envs = [await startAcmeEnv()];
      return;
    }
    const publicPort = await freePort();
    const a = await startAcmeEnv({ publicPort });
    const b = await startAcmeEnv({ publicPort, store: a.ca.store, shared: a });
    envs = [a, b];
    lb = await roundRobin(
      publicPort,
      envs.map((e) => portOf(e.ca.server!.httpsUrl)),
    );
  });
  afterAll(async () => {
    lb?.server.close();
    for (const e of [...envs].reverse()) await e.close();
    files?.cleanup();
  });

  it('no flow fails; later certificates chain to the new intermediate, earlier ones still verify; CRL and OCSP answer for both', async () => {
    const env = envs[0]!;
    const ca = env.ca;
    const old = await ca.ctx.ca.issuerForProfile('tls-server');

    const flows: Flow[] = [];
    let stop = false;
    const worker = async (i: number) => {
      const client = await env.client();
      await client.createAccount({ termsOfServiceAgreed: true });
      for (let n = 0; !stop; n++) {
        const flow: Flow = { worker: i, client, startedAt: Date.now() };
        flows.push(flow);
        try {
          const name = `w${i}-${n}.load.internal`;
          flow.certPem = (await issue(env, client, [{ type: 'dns', value: name }], 'http-01')).certPem;
        } catch (err) {
          flow.error = (err as Error).message;
        }
      }
    };
    const done = (after = 0) => flows.filter((f) => f.startedAt > after && (f.certPem ?? f.error)).length;
    const workers = Array.from({ length: WORKERS }, (_, i) => worker(i));
    let rotation: { old: { id: string; state: string }; new: { id: string; state: string } };
    let cutoff: number;
    try {
      await waitFor('certificates before the rotation', async () => done() >= WORKERS, 60_000);
      const rotatedAt = Date.now();
      const r = await cli(['ca', 'rotate-intermediate', old.id, '--json'], ca.env);
      expect(r.code, r.stderr).toBe(0);
      rotation = JSON.parse(r.stdout) as typeof rotation;
      expect([rotation.old.state, rotation.new.state]).toEqual(['retiring', 'active']);
      // The notice reaches every replica milliseconds after the commit; a request signed in that
      // window may still come from the retiring issuer, which is valid and answers for it.
      for (const e of envs)
        await waitFor(
          'every replica to sign with the new intermediate',
          async () => (await e.ca.ctx.ca.issuerForProfile('tls-server')).id === rotation.new.id,
          5_000,
        );
      cutoff = Date.now();
      await waitFor('certificates after the rotation', async () => done(cutoff) >= WORKERS, 60_000);
      // Flows that ended before the rotation began were certainly signed by the old intermediate.
      expect(flows.some((f) => f.certPem && f.startedAt < rotatedAt)).toBe(true);
    } finally {
      stop = true;
      await Promise.all(workers);
    }

    expect(flows.filter((f) => f.error).map((f) => f.error)).toEqual([]);
    const rows = await ca.ctx.database.db.selectFrom('issuers').selectAll().execute();
    const oldPem = toPem(rows.find((r) => r.id === old.id)!.certificate);
    const newPem = toPem(rows.find((r) => r.id === rotation.new.id)!.certificate);
    for (const f of flows) {
      const chain = blocks(f.certPem!);
      expect([oldPem, newPem]).toContain(chain[1]);
      if (f.startedAt > cutoff) expect(chain[1]).toBe(newPem);
      const v = opensslVerify(ca.rootPem, f.certPem!);
      expect(v.ok, v.output).toBe(true);
    }
    const before = flows.filter((f) => blocks(f.certPem!)[1] === oldPem);
    const after = flows.filter((f) => f.startedAt > cutoff);
    expect(before.length).toBeGreaterThanOrEqual(2);

    // A certificate of the retiring intermediate is revoked by its ACME account, and the CRL and
    // OCSP of each intermediate answer for its own certificates.
    const revoked = before[0]!;
    const kept = before[1]!;
    const fresh = after[0]!;
    await revoked.client.revokeCertificate(revoked.certPem!, { reason: 4 });
    const publisher = new RevocationPublisher(ca.ctx, 'test');
    await publisher.ensureSigners();
    await publisher.publishCrls({ force: true });

    const rootFile = files.file('root.pem', ca.rootPem);
    for (const [id, pem, serial] of [
      [old.id, oldPem, serialOf(revoked.certPem!)],
      [rotation.new.id, newPem, undefined],
    ] as const) {
      const res = await fetch(`${ca.httpUrl}/crl/${id}.crl`);
      expect(res.status).toBe(200);
      const crl = files.file(`${id}.crl`, new Uint8Array(await res.arrayBuffer()));
      const out = openssl(
        ['crl', '-inform', 'DER', '-in', crl, '-CAfile', files.file(`${id}-ca.pem`, pem + ca.rootPem)].concat([
          '-verify',
          '-noout',
          '-text',
        ]),
      );
      expect(`${out.stdout}${out.stderr}`).toContain('verify OK');
      if (serial) expect(out.stdout).toContain(`Serial Number: ${serial}`);
    }

    // OCSP from the last replica: it answers for what the other signed.
    const responder = envs[envs.length - 1]!.ca;
    const ocsp = async (interPem: string, certPem: string, tag: string) => {
      const inter = files.file(`${tag}-inter.pem`, interPem);
      const cert = files.file(`${tag}-leaf.pem`, blocks(certPem)[0]!);
      return waitFor(`an OCSP answer for the ${tag} certificate`, async () => {
        const r = await opensslOcsp(responder, { root: rootFile, inter }, ['-cert', cert]);
        return r.ok && /: (good|revoked)/.test(r.out) ? r.out : undefined;
      });
    };
    expect(await ocsp(oldPem, kept.certPem!, 'old')).toContain(': good');
    expect(await ocsp(oldPem, revoked.certPem!, 'revoked')).toContain(': revoked');
    expect(await ocsp(newPem, fresh.certPem!, 'new')).toContain(': good');
  });
});
