import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { parseDuration } from '../config/duration.ts';
import { type CliCommand, defineCommand, LOCAL, requireString, UsageError } from './command.ts';

/** The admin profile's name (config/load.ts ADMIN_PROFILE; repeated so `--help` loads no config). */
const ADMIN = 'admin';

const FILES = { key: 'admin.key', cert: 'admin.pem', roots: 'ca.pem' } as const;

interface AdminCertInput {
  email: string;
  /** The public key, SPKI DER in base64: the private key never leaves this process. */
  spki: string;
  ttlMs?: number;
  [LOCAL]?: { keyPem: string; out: string };
}

interface AdminCertOutput {
  serial: string;
  principal: string;
  notAfter: string;
  chainPem: string;
  rootsPem: string;
  /** Where the files went (added by the CLI process). */
  files?: { key: string; cert: string; roots: string };
}

// Deliberately loose: the email is a name for the audit log, and the profile checks it again.
const EMAIL = /^[^\s@<>()[\]\\,;:"]{1,64}@[A-Za-z0-9.-]{1,253}$/;

const adminCertCreate = defineCommand<AdminCertInput, AdminCertOutput>({
  path: ['admin-cert', 'create'],
  usage: 'admin-cert create --email ADDRESS [--out DIR] [--ttl 720h]',
  summary: 'make an administrator client certificate for /admin and --admin-url (key made here, never sent)',
  help: `Usage: keyward admin-cert create --email ADDRESS [--out DIR] [--ttl 720h]

Makes a P-256 key in this process and has the CA certify it with the "admin" profile (clientAuth,
the email address as its subject alternative name). Whoever holds the key and certificate is
administrator "admin:ADDRESS" on the HTTPS listener: the admin web page at /admin and the
command line's --admin-url. The audit log records that name for every action.

Writes into DIR (default: the current directory; existing files are never overwritten):
  admin.key   the private key (mode 0600)
  admin.pem   the certificate, then the intermediate
  ca.pem      the CA's roots (--admin-ca, and what a browser should trust for the listener)

For a browser, bundle them: openssl pkcs12 -export -inkey admin.key -in admin.pem -out admin.p12
To take the access away: keyward revoke SERIAL.
`,
  options: { email: { type: 'string' }, out: { type: 'string' }, ttl: { type: 'string' } },
  input: async (values) => {
    const email = requireString(values, 'email', 'admin-cert create');
    if (!EMAIL.test(email)) throw new UsageError(`--email: "${email}" is not an email address`);
    let ttlMs: number | undefined;
    try {
      ttlMs = typeof values.ttl === 'string' ? parseDuration(values.ttl) : undefined;
    } catch (err) {
      throw new UsageError(`--ttl: ${(err as Error).message}`);
    }
    const out = resolve(typeof values.out === 'string' ? values.out : '.');
    for (const name of Object.values(FILES))
      if (existsSync(join(out, name)))
        throw new UsageError(`--out: ${join(out, name)} exists; choose another directory (nothing was made)`);
    const { generateKeyPairSync } = await import('node:crypto');
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return {
      email,
      spki: pair.publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
      ttlMs,
      [LOCAL]: { keyPem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), out },
    };
  },
  run: async (ctx, input) => {
    // The same decision path as every other front end (profile limits, name policy, blocked keys).
    const issued = await ctx.issuance.issue({
      requester: { kind: 'operator', principal: input.principal },
      names: { dns: [], ip: [], uri: [], email: [input.email] },
      commonName: input.email,
      publicKey: { spki: new Uint8Array(Buffer.from(input.spki, 'base64')), keyType: 'ecdsa-p256' },
      profile: ADMIN,
      ...(input.ttlMs !== undefined ? { lifetimeMs: input.ttlMs } : {}),
    });
    return {
      serial: issued.serial,
      principal: `admin:${input.email}`,
      notAfter: issued.notAfter.toISOString(),
      chainPem: issued.chainPem,
      rootsPem: await ctx.ca.rootsPem(),
    };
  },
  finish: (output, input) => {
    const local = input[LOCAL];
    if (!local) return;
    mkdirSync(local.out, { recursive: true });
    const files = {
      key: join(local.out, FILES.key),
      cert: join(local.out, FILES.cert),
      roots: join(local.out, FILES.roots),
    };
    // 'wx': never over a file that appeared meanwhile.
    writeFileSync(files.key, local.keyPem, { mode: 0o600, flag: 'wx' });
    writeFileSync(files.cert, output.chainPem, { flag: 'wx' });
    writeFileSync(files.roots, output.rootsPem, { flag: 'wx' });
    output.files = files;
  },
  format: (out) => `Made admin certificate ${out.serial} for ${out.principal}, valid until ${out.notAfter}.
  key          ${out.files?.key ?? '(not written)'} (keep it secret)
  certificate  ${out.files?.cert ?? '(not written)'}
  CA roots     ${out.files?.roots ?? '(not written)'}
Use it with --admin-url URL --admin-cert ${out.files?.cert ?? 'admin.pem'} --admin-key ${out.files?.key ?? 'admin.key'} --admin-ca ${out.files?.roots ?? 'ca.pem'},
or in a browser at /admin (openssl pkcs12 -export -inkey admin.key -in admin.pem -out admin.p12).
Revoke it to take the access away: keyward revoke ${out.serial}
`,
});

export const adminCertCommands: CliCommand[] = [adminCertCreate];
