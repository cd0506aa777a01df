import { generateKeyPairSync } from 'node:crypto';

import type { OptionValues } from '../../src/cli/command.ts';
import { kmsCommands } from '../../src/cli/kms-commands.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { AppContext } from '../../src/context.ts';
import { openContext } from '../../src/context.ts';

/** Issues a leaf through the real signing core. */
export async function issueLeaf(ctx: AppContext, name = 'svc.internal') {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return ctx.ca.issue({
    subjectPublicKeyInfo: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
    keyType: 'ecdsa-p256',
    sans: { dns: [name], ip: [], uri: [], email: [] },
    profile: 'tls-server',
    requester: 'test',
  });
}

/** Runs a kms/audit CLI command the way the CLI does (input parsing, then run), in-process. */
export async function kmsCli<T = unknown>(
  ctx: AppContext,
  words: string[],
  values: OptionValues = {},
  positionals: string[] = [],
): Promise<T> {
  const cmd = kmsCommands.find((c) => c.path.join(' ') === words.join(' '));
  if (!cmd) throw new Error(`no command ${words.join(' ')}`);
  const input = await cmd.input(values, positionals);
  return (await cmd.run(ctx, { ...input, principal: 'cli:test' } as never)) as T;
}

/** Closes the context and opens a fresh one on the same store: a restart of the process. */
export async function restart(ctx: AppContext, configFile: string, env: Record<string, string>): Promise<AppContext> {
  await ctx.close();
  return openContext(loadConfig({ configFile, env }), { principal: 'test' });
}
