import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { tempDir } from './openssl.ts';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface TestToken {
  label: string;
  pin: string;
  pinFile: string;
  /** SOFTHSM2_CONF for child processes. */
  conf: string;
  /** kms.hsm settings for a test CA. */
  settings: { module: string; token: string; pinFile: string; sessions: number };
  /** Takes the token away (its directory moves), as if the HSM were unplugged. */
  remove(): void;
  /** Brings a removed token back. */
  restore(): void;
  /** Re-initialises the token, wiping its objects; returns a function that restores the old contents. */
  reinitialise(): () => void;
  /** `pkcs11-tool --list-objects` output for one object type. */
  listObjects(type: 'privkey' | 'pubkey' | 'secrkey'): string;
}

/**
 * A SoftHSM2 token of a test file's own. SoftHSM reads SOFTHSM2_CONF when the module is
 * initialised, once per process, so this must run before anything in the process uses PKCS#11.
 */
export function createTestToken(label = 'keyward-hsm'): TestToken {
  const dir = tempDir('kw-softhsm-');
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  process.env.SOFTHSM2_CONF = conf;
  const pin = '87654321';
  const init = () =>
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', '12345678', '--pin', pin], {
      env: process.env,
      stdio: 'pipe',
    });
  init();
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  return {
    label,
    pin,
    pinFile,
    conf,
    settings: { module: SOFTHSM_MODULE, token: label, pinFile, sessions: 4 },
    remove: () => {
      renameSync(tokens, `${tokens}.away`);
      mkdirSync(tokens);
    },
    restore: () => {
      rmSync(tokens, { recursive: true, force: true });
      renameSync(`${tokens}.away`, tokens);
    },
    reinitialise: () => {
      const backup = `${tokens}.backup`;
      cpSync(tokens, backup, { recursive: true });
      execFileSync(
        'softhsm2-util',
        ['--init-token', '--token', label, '--label', label, '--so-pin', '12345678', '--pin', pin],
        { env: process.env, stdio: 'pipe' },
      );
      return () => {
        rmSync(tokens, { recursive: true, force: true });
        renameSync(backup, tokens);
      };
    },
    listObjects: (type) =>
      execFileSync(
        'pkcs11-tool',
        ['--module', SOFTHSM_MODULE, '--token-label', label, '--login', '--pin', pin, '--list-objects', '--type', type],
        { env: process.env, encoding: 'utf8' },
      ),
  };
}
