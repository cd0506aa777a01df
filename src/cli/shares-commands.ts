import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import type { UnsealStatus } from '../kms/index.ts';
import { decryptShare, type DeliveredShares, type ShareDelivery } from '../kms/share-files.ts';
import { type CliCommand, defineCommand, type OptionSpec, type OptionValues, UsageError } from './command.ts';
import { cliIo } from './io.ts';
import { promptSecret } from './prompt.ts';

/** Options of the commands that hand out a new share set (init, rekey-shares, rotate-root). */
export const SHARE_DELIVERY_OPTIONS: OptionSpec = {
  'share-dir': { type: 'string' },
  'holder-key': { type: 'string', multiple: true },
};

const strings = (v: OptionValues[string]): string[] =>
  (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((s): s is string => typeof s === 'string');

function readFile(file: string, option: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`--${option}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

/** --share-dir DIR and --holder-key FILE (one per share, in order), read in the CLI process. */
export function shareDeliveryInput(v: OptionValues): ShareDelivery {
  const dir = typeof v['share-dir'] === 'string' ? resolve(v['share-dir']) : undefined;
  const holderKeys = strings(v['holder-key']).map((f) => readFile(f, 'holder-key').toString('utf8'));
  if (holderKeys.length && !dir)
    throw new UsageError('--holder-key needs --share-dir to write the encrypted shares to');
  return { dir, holderKeys: holderKeys.length ? holderKeys : undefined };
}

/** How a new share set is shown: each share once, or the files that hold them. */
export function describeShares(d: DeliveredShares): string {
  const head = `Root of trust: ${d.threshold} of ${d.count} shares (share set ${d.setId}).\n`;
  if (d.files)
    return (
      head +
      `${d.encrypted ? 'Encrypted to each holder (RSA-OAEP-SHA-256) and written' : 'Written'} to:\n` +
      d.files.map((f) => `  ${f}\n`).join('') +
      'Give each file to its holder and remove it from this machine; these shares are not shown again.\n'
    );
  return (
    head +
    'These shares are shown once and stored nowhere. Give each to a different holder; any ' +
    `${d.threshold} of them unseal the CA (keyward unseal), fewer reveal nothing.\n` +
    (d.shares ?? []).map((s, i) => `  share ${i + 1}: ${s}\n`).join('')
  );
}

/** One share from a file (plain text, or encrypted to the holder's key) or from the terminal. */
async function readShare(v: OptionValues): Promise<string> {
  const file = typeof v['share-file'] === 'string' ? v['share-file'] : undefined;
  const key = typeof v['holder-key'] === 'string' ? v['holder-key'] : undefined;
  if (file) {
    const blob = readFile(file, 'share-file');
    if (blob.subarray(0, 14).toString('latin1') === 'keyward-share:') return blob.toString('utf8').trim();
    if (!key) throw new UsageError(`--share-file: ${file} is encrypted; give --holder-key with your private key`);
    return decryptShare(blob, readFile(key, 'holder-key').toString('utf8'));
  }
  if (cliIo().stdin.isTTY) return promptSecret('Your share (input hidden): ');
  // Not a terminal: the first line of standard input.
  const chunks: Buffer[] = [];
  for await (const chunk of cliIo().stdin) chunks.push(chunk as Buffer);
  const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0]?.trim();
  if (!line) throw new UsageError('unseal needs a share: on the terminal, on standard input, or --share-file');
  return line;
}

type UnsealInput = { action: 'status' } | { action: 'reset' } | { action: 'submit'; share: string };

export function describeUnseal(s: UnsealStatus): string {
  if (!s.sealed) return `The CA is unsealed${s.entered.length ? ` (shares ${s.entered.join(', ')})` : ''}.\n`;
  return `The CA is sealed: ${s.entered.length} of ${s.threshold} shares entered${s.entered.length ? ` (${s.entered.join(', ')})` : ''}; share set ${s.setId}, ${s.count} shares in all.\n`;
}

export const unsealCommand = defineCommand<UnsealInput, UnsealStatus>({
  path: ['unseal'],
  usage: 'unseal [--share-file F [--holder-key KEY]] [--status] [--reset]',
  summary: 'give one share to the running server; the threshold of shares opens the root of trust',
  options: {
    'share-file': { type: 'string' },
    'holder-key': { type: 'string' },
    status: { type: 'boolean', default: false },
    reset: { type: 'boolean', default: false },
  },
  // The shares must reach the process that serves: never a throwaway process of the CLI's own.
  remote: 'required',
  adminHttps: true,
  input: async (v) => {
    if (v.status === true) return { action: 'status' };
    if (v.reset === true) return { action: 'reset' };
    return { action: 'submit', share: await readShare(v) };
  },
  run: (ctx, input) =>
    input.action === 'status'
      ? ctx.kms.unsealStatus()
      : input.action === 'reset'
        ? ctx.kms.resetUnseal()
        : ctx.kms.unseal(input.share, input.principal),
  format: describeUnseal,
});

interface RekeyInput {
  shares: string[];
  threshold?: number;
  count?: number;
  delivery: ShareDelivery;
}

/** Current shares for rekey-shares: --share-file (plain) repeated, then the terminal or stdin lines. */
async function readCurrentShares(v: OptionValues): Promise<string[]> {
  const files = strings(v['share-file']).map((f) => readFile(f, 'share-file').toString('utf8').trim());
  if (files.length) return files;
  if (cliIo().stdin.isTTY) {
    const out: string[] = [];
    cliIo().stderr('Enter the current shares one at a time; an empty line ends.\n');
    for (;;) {
      const s = await promptSecret(`Share ${out.length + 1} (input hidden): `);
      if (!s) break;
      out.push(s);
    }
    return out;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of cliIo().stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

const positiveInt = (v: OptionValues[string], name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 2 || n > 32) throw new UsageError(`--${name} must be a whole number from 2 to 32`);
  return n;
};

export const rekeySharesCommand = defineCommand<RekeyInput, DeliveredShares>({
  path: ['rekey-shares'],
  usage: 'rekey-shares [--threshold M] [--shares N] [--share-file F]... [--share-dir D [--holder-key K]...]',
  summary: 'with the threshold of current shares, hand out a new share set for the same root (old shares stop working)',
  options: {
    threshold: { type: 'string' },
    shares: { type: 'string' },
    'share-file': { type: 'string', multiple: true },
    ...SHARE_DELIVERY_OPTIONS,
  },
  input: async (v) => ({
    threshold: positiveInt(v.threshold, 'threshold'),
    count: positiveInt(v.shares, 'shares'),
    delivery: shareDeliveryInput(v),
    shares: await readCurrentShares(v),
  }),
  run: async (ctx, input) =>
    (await import('../kms/rekey-shares.ts')).rekeyShares(
      ctx.kms,
      ctx.database.db,
      input.shares,
      { threshold: input.threshold, count: input.count },
      input.delivery,
      input.principal,
    ),
  format: (out) => `${describeShares(out)}The shares of the previous set no longer unseal anything.\n`,
});

export const sharesCommands: CliCommand[] = [unsealCommand, rekeySharesCommand];
