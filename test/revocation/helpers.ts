import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:https';

import type { IssuedCertificate } from '../../src/ca/authority.ts';
import { toPem } from '../../src/ca/pem.ts';
import type { TestCa } from '../support/ca.ts';
import { tempDir } from '../support/pki.ts';

export interface Leaf extends IssuedCertificate {
  spki: Uint8Array;
  pem: string;
}

/** A leaf issued by the CA under test for a fresh P-256 key (or the given key). */
export async function issueLeaf(
  ca: TestCa,
  opts: { profile?: string; lifetimeMs?: number; spki?: Uint8Array; name?: string } = {},
): Promise<Leaf> {
  const spki =
    opts.spki ??
    new Uint8Array(
      generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' }),
    );
  const issued = await ca.ctx.ca.issue({
    subjectPublicKeyInfo: spki,
    keyType: 'ecdsa-p256',
    sans: { dns: [opts.name ?? 'svc.internal'], ip: [], uri: [], email: [] },
    profile: opts.profile ?? 'tls-server',
    lifetimeMs: opts.lifetimeMs,
    requester: 'test',
  });
  return { ...issued, spki, pem: toPem(issued.der) };
}

/** Root, intermediate and a leaf as PEM files for the openssl binary. */
export async function pemFiles(
  ca: TestCa,
  leaf?: Leaf,
): Promise<{
  dir: string;
  root: string;
  inter: string;
  leaf: string;
  chain: string;
  file: (name: string, data?: string | Uint8Array) => string;
  cleanup(): void;
}> {
  const t = tempDir('kw-rev-');
  const inter = await ca.ctx.ca.intermediatesPem();
  return {
    dir: t.path,
    root: t.file('root.pem', ca.rootPem),
    inter: t.file('inter.pem', inter),
    chain: t.file('chain.pem', inter + ca.rootPem),
    leaf: t.file('leaf.pem', leaf?.pem ?? ''),
    file: t.file,
    cleanup: t.cleanup,
  };
}

/**
 * `openssl ocsp` against the running responder, which lives in this very process: so the binary
 * runs asynchronously (spawnSync would stall the server it talks to).
 */
export function opensslOcsp(
  ca: Pick<TestCa, 'httpUrl'>,
  files: { root: string; inter: string },
  target: string[],
  extra: string[] = [],
): Promise<{ ok: boolean; out: string }> {
  const args = [
    'ocsp',
    '-issuer',
    files.inter,
    ...target,
    '-url',
    `${ca.httpUrl}/ocsp`,
    '-CAfile',
    files.root,
    '-verify_other',
    files.inter,
    ...extra,
  ];
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ ok: !err, out: `${stdout}${stderr}` });
    });
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** GET over HTTPS trusting only the test CA's root. */
export function httpsGet(
  url: string,
  rootPem: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: rootPem, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Waits until the OCSP refresher has pre-signed an answer for `serial`. */
export async function waitForPresigned(ca: TestCa, serial: string): Promise<void> {
  await waitFor(
    'a pre-signed answer',
    async () =>
      (await ca.ctx.database.db
        .selectFrom('ocsp_responses')
        .select('serial')
        .where('serial', '=', serial)
        .executeTakeFirst()) !== undefined,
  );
}
