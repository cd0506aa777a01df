import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { CommandSpec } from './command.ts';

export const GLOBAL_HELP = `Options (every command):
  --config FILE     configuration file (default ca-config/keyward.yaml, or KEYWARD_CONFIG)
  --data-dir DIR    data directory (overrides dataDir, or KEYWARD_DATA_DIR)
  --json            machine-readable output; errors too, as {"error":{"code","message"}} on stderr
  --admin-url URL   run it on that server's HTTPS admin endpoint with an admin certificate:
                    --admin-cert FILE --admin-key FILE --admin-ca ROOTS.pem
  -h, --help        help (keyward COMMAND --help for one command)
  -V, --version     the version
`;

function table(specs: readonly CommandSpec[]): string {
  return specs
    .map(({ usage, summary }) =>
      usage.length > 28 ? `  ${usage}\n  ${''.padEnd(28)} ${summary}` : `  ${usage.padEnd(28)} ${summary}`,
    )
    .join('\n');
}

export function usage(specs: readonly CommandSpec[]): string {
  return `Usage: keyward <command> [options]

Commands:
${table(specs)}

${GLOBAL_HELP}`;
}

/** Help for one command, or for a group such as `kms` (every command under it). */
export function commandHelp(specs: readonly CommandSpec[], words: string[]): string | undefined {
  const exact = specs.find((s) => s.path.join(' ') === words.join(' '));
  if (exact) return exact.help ?? `Usage: keyward ${exact.usage}\n\n${exact.summary}\n\n${GLOBAL_HELP}`;
  const group = specs.filter((s) => words.length > 0 && words.every((w, i) => s.path[i] === w));
  return group.length ? `Commands:\n${table(group)}\n\n${GLOBAL_HELP}` : undefined;
}

/** The package version, from the package.json above this file (src/ or the compiled dist/src/). */
export function version(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}
