import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cli, keyward } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';

// What a user sees at the command line: exit codes and streams. The binary itself prints the
// version; the rest runs in-process (`runCli`, the binary's own parsing and error rendering).
describe('commands that do not surprise', () => {
  let empty: string;
  let store: TestStore;

  beforeAll(async () => {
    empty = mkdtempSync(join(tmpdir(), 'kw-empty-'));
    store = await createTestStore(); // a database (PostgreSQL or embedded) with the schema but no CA
  });
  afterAll(async () => {
    rmSync(empty, { recursive: true, force: true });
    await store.cleanup();
  });

  it('--version and -V print the package version', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect((await keyward(['--version'], {})).stdout).toBe(`${version}\n`);
    expect((await cli(['-V'], {})).stdout).toBe(`${version}\n`);
    expect(JSON.parse((await cli(['--version', '--json'], {})).stdout)).toEqual({ version });
  });

  it('COMMAND --help prints that command; a group lists its commands; agent has its own help', async () => {
    const one = await cli(['certs', 'list', '--help'], {});
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(
      /^Usage: keyward certs list \[--status valid\|revoked \| --state reserved\|abandoned\] \[--limit N\]\n\nlist issued/,
    );
    const group = await cli(['kms', '--help'], {});
    expect(group.stdout).toContain('  kms show KEY');
    expect(group.stdout).not.toContain('certs list');
    const agent = await cli(['agent', '--help'], {});
    expect(agent.code).toBe(0);
    expect(agent.stdout).toContain('--root-fingerprint SHA256');
  });

  it('a mistake on the command line exits 2 and says what to run; with --json the error is JSON', async () => {
    const unknown = await cli(['certs', 'lst'], {});
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('keyward: unknown command "certs lst" (see keyward --help)\n');
    const json = await cli(['certs', 'list', '--limit', 'x', '--json'], { KEYWARD_DATA_DIR: empty });
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr)).toEqual({
      error: { kind: 'usage', code: 'usage', detail: '--limit must be a positive whole number' },
    });
    expect(json.stdout).toBe('');
  });

  it('read and admin commands where no CA exists say so, exit 3 (not found) and create nothing', async () => {
    const dataDir = join(empty, 'data');
    for (const args of [['certs', 'list'], ['kms', 'list'], ['revoke', 'ab12'], ['policy', 'list'], ['migrate']]) {
      const r = await cli(args, { KEYWARD_DATA_DIR: dataDir });
      expect(r.code, args.join(' ')).toBe(3);
      expect(r.stderr).toContain(`there is no CA in ${dataDir}`);
      expect(r.stderr).toContain('keyward init');
      expect(r.stdout).toBe('');
    }
    expect(existsSync(dataDir)).toBe(false);
    const json = await cli(['certs', 'show', 'ab12', '--json'], { KEYWARD_DATA_DIR: dataDir });
    expect(json.code).toBe(3);
    expect((JSON.parse(json.stderr) as { error: { kind: string } }).error.kind).toBe('notInitialized');
    expect(readdirSync(empty)).toEqual([]);
  });

  it('the same on a database that has the schema but no CA: no root of trust is made', async () => {
    const r = await cli(['kms', 'list'], store.env);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('there is no CA');
    const handle = await store.open();
    try {
      expect(await handle.db.selectFrom('kms_roots').select('id').execute()).toEqual([]);
    } finally {
      await handle.close();
    }
    expect(existsSync(join(store.dataDir, 'root.key'))).toBe(false);
  });
});
