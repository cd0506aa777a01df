import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDir(prefix = 'kw-ossl-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A key and CSR made by the real openssl binary. `keyArgs` e.g. ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']. */
export function opensslCsr(opts: { keyArgs?: string[]; subject?: string; san?: string; addext?: string[] } = {}): {
  csrPem: string;
  keyPem: string;
  dir: string;
} {
  const dir = tempDir();
  const args = [
    'req',
    '-new',
    ...(opts.keyArgs ?? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']),
    '-nodes',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'req.csr'),
    '-subj',
    opts.subject ?? '/CN=app.internal',
  ];
  if (opts.san) args.push('-addext', `subjectAltName=${opts.san}`);
  for (const ext of opts.addext ?? []) args.push('-addext', ext);
  execFileSync('openssl', args, { stdio: 'pipe' });
  return {
    csrPem: readFileSync(join(dir, 'req.csr'), 'utf8'),
    keyPem: readFileSync(join(dir, 'key.pem'), 'utf8'),
    dir,
  };
}

/** `openssl verify` of a leaf against a root, with intermediates as untrusted; returns its output. */
export function opensslVerify(rootPem: string, chainPem: string): { ok: boolean; output: string } {
  const dir = tempDir();
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
  writeFileSync(join(dir, 'root.pem'), rootPem);
  writeFileSync(join(dir, 'leaf.pem'), blocks[0] ?? '');
  writeFileSync(join(dir, 'chain.pem'), blocks.slice(1).join(''));
  const args = ['verify', '-CAfile', join(dir, 'root.pem')];
  if (blocks.length > 1) args.push('-untrusted', join(dir, 'chain.pem'));
  args.push(join(dir, 'leaf.pem'));
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

export function opensslText(pem: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
}
