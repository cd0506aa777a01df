import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { keyward } from '../support/cli.ts';

// Packages that `--help`, `--version` and a command sent to a running server's admin socket must
// not load: they are what made every command take a second or more.
const HEAVY = [
  'kysely',
  'pg',
  '@electric-sql',
  'pkijs',
  '@peculiar',
  'asn1js',
  'hono',
  '@hono',
  'jose',
  'pino',
  '@aws-sdk',
];

// Records every module URL the CLI resolves (an ESM resolve hook registered before it starts).
const HOOK = `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.KW_LOADED, r.url + '\\\\n');
  return r;
}\`));
`;

describe('the command line starts without loading what it does not need', () => {
  let dir: string;
  let hook: string;
  let stub: Server;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kw-cli-'));
    hook = join(dir, 'hook.mjs');
    writeFileSync(hook, HOOK);
    // A stand-in for `keyward serve`'s admin socket: answers certs.list with one certificate.
    stub = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          result: [
            {
              serial: 'ab12',
              issuerId: 'i',
              commonName: null,
              sans: { dns: ['app.internal'], ip: [], uri: [], email: [] },
              profile: 'tls-server',
              notBefore: '2025-01-01T00:00:00.000Z',
              notAfter: '2025-01-02T00:00:00.000Z',
              status: 'valid',
              revokedAt: null,
              revocationReason: null,
              requester: 'x',
            },
          ],
        }),
      );
    });
    await new Promise<void>((resolve) => stub.listen(join(dir, 'admin.sock'), resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => stub.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const loaded = async (args: string[]) => {
    const log = join(dir, `loaded-${args.join('-')}.txt`);
    const r = await keyward(args, { KW_LOADED: log, KEYWARD_DATA_DIR: dir }, undefined, ['--import', hook]);
    const urls = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    const packages = new Set(urls.map((u) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u)?.[1]).filter(Boolean));
    return { r, packages: [...packages] as string[] };
  };

  it('--help lists every command, agent, serve and migrate included, and loads no heavy package', async () => {
    const { r, packages } = await loaded(['--help']);
    expect(r.code).toBe(0);
    for (const command of ['serve', 'migrate', 'agent --token', 'init', 'certs list', 'kms show KEY', 'revoke SERIAL'])
      expect(r.stdout).toContain(`  ${command}`);
    expect(packages.filter((p) => HEAVY.some((h) => p === h || p.startsWith(`${h}/`)))).toEqual([]);
  });

  it('a command answered through the admin socket loads no database, crypto or server package', async () => {
    const { r, packages } = await loaded(['certs', 'list']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('ab12  valid    2025-01-02T00:00:00.000Z  tls-server  app.internal');
    expect(packages.filter((p) => HEAVY.some((h) => p === h || p.startsWith(`${h}/`)))).toEqual([]);
  });
});
