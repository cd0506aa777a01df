import { X509Certificate } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DirectoryRoot } from '../../src/acme/directory.ts';
import { toPem } from '../../src/ca/pem.ts';
import { httpsJson } from '../mesh/helpers.ts';
import { waitFor } from '../revocation/helpers.ts';
import { type AcmeTestEnv, startAcmeEnv } from '../support/acme.ts';
import { cli } from '../support/cli.ts';

const blocks = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
const fingerprint = (cert: Uint8Array | string) => new X509Certificate(cert).fingerprint256;

interface RootView {
  id: string;
  state: string;
  sha256Fingerprint: string;
}

// What a client learns about the roots to trust, from each place it may look: the ACME directory's
// meta.roots, /roots.pem and the SPIFFE bundle must name the same roots, and a root rollover must
// show in all of them at once, on every replica.
describe('the roots to trust, during a root rollover', () => {
  let a: AcmeTestEnv;
  // A second replica on the same database (PGlite admits one process, so PostgreSQL only).
  let b: AcmeTestEnv | undefined;
  let trust: string;

  beforeAll(async () => {
    a = await startAcmeEnv();
    if (process.env.DATABASE_URL) b = await startAcmeEnv({ store: a.ca.store, shared: a });
    trust = a.ca.rootPem;
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const get = async (env: AcmeTestEnv, path: string) => {
    const r = await httpsJson(`${env.ca.server!.httpsUrl}${path}`, { ca: trust });
    expect(r.status, path).toBe(200);
    return r.json;
  };
  const directoryRoots = async (env: AcmeTestEnv) =>
    ((await get(env, '/acme/directory')).meta as { roots: DirectoryRoot[] }).roots;
  const rootsPem = async (env: AcmeTestEnv) => blocks(await (await fetch(`${env.ca.httpUrl}/roots.pem`)).text());

  /** Each listed root, fetched from its URL, is the /roots.pem entry in the same place. */
  async function expectSameAsRootsPem(env: AcmeTestEnv, listed: DirectoryRoot[]): Promise<void> {
    const served = await rootsPem(env);
    expect(listed).toHaveLength(served.length);
    for (const [i, root] of listed.entries()) {
      const res = await fetch(root.url);
      expect(res.headers.get('content-type')).toBe('application/pkix-cert');
      const der = new Uint8Array(await res.arrayBuffer());
      expect(toPem(der)).toBe(served[i]);
      expect(root.sha256Fingerprint).toBe(fingerprint(der));
    }
  }

  it('meta.roots lists the root, then both roots right after `ca rotate-root`, as /roots.pem serves them', async () => {
    const before = await directoryRoots(a);
    expect(before).toEqual([
      {
        url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/issuers\/[0-9a-f]{16}\.cer$/),
        sha256Fingerprint: fingerprint(trust),
        subject: expect.stringMatching(/Root/),
        notAfter: expect.any(String),
        current: true,
      },
    ]);
    await expectSameAsRootsPem(a, before);

    const r = await cli(['ca', 'rotate-root', '--json'], a.ca.env, { context: a.ca.ctx });
    expect(r.code, r.stderr).toBe(0);
    const rotated = JSON.parse(r.stdout) as { old: RootView; new: RootView };

    // No wait: the directory is built per request from the issuer rows the change just dropped.
    const after = await directoryRoots(a);
    expect(after.map((x) => [x.url.match(/([0-9a-f]{16})\.cer$/)![1], x.sha256Fingerprint, x.current])).toEqual([
      [rotated.old.id, rotated.old.sha256Fingerprint, false],
      [rotated.new.id, rotated.new.sha256Fingerprint, true],
    ]);
    expect(after[0]).toEqual({ ...before[0]!, current: false });
    await expectSameAsRootsPem(a, after);

    if (b) {
      const other = b;
      // The other replica hears of the change by NOTIFY, milliseconds after the commit.
      await waitFor('replica b to list both roots', async () => (await directoryRoots(other)).length === 2, 5_000);
      // Each replica names its own HTTP listener; the roots are the same.
      const withoutUrl = (roots: DirectoryRoot[]) => roots.map(({ url: _, ...rest }) => rest);
      expect(withoutUrl(await directoryRoots(other))).toEqual(withoutUrl(after));
      await expectSameAsRootsPem(other, after);
    }
  });

  it('/v1/bundle carries both roots with the refresh hint, on every replica', async () => {
    const served = await rootsPem(a);
    expect(served).toHaveLength(2);
    for (const env of b ? [a, b] : [a]) {
      const bundle = await get(env, '/v1/bundle');
      const keys = bundle.keys as Array<{ use: string; x5c: string[] }>;
      expect(keys.map((k) => toPem(new Uint8Array(Buffer.from(k.x5c[0]!, 'base64'))))).toEqual(served);
      expect(keys.every((k) => k.use === 'x509-svid')).toBe(true);
      expect(bundle.spiffe_refresh_hint).toBe(a.ca.config.mesh.bundleRefreshHint / 1000);
    }
  });
});
