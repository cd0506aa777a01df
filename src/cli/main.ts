import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';

import { type Config, ConfigError, loadConfig } from '../config/load.ts';
import { openContext } from '../context.ts';
import { openDatabase } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { describeError } from '../http/errors.ts';
import { adminSocketPath } from '../server.ts';
import { callAdmin, RemoteError } from './admin-client.ts';
import { type CliCommand, commandName, type OptionSpec, UsageError } from './command.ts';
import { promptSecret } from './prompt.ts';
import { commands } from './registry.ts';
import { serve } from './serve.ts';

const GLOBAL_OPTIONS: OptionSpec = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

function usage(): string {
  const lines = [
    ['serve', 'initialise if needed, then serve HTTPS, HTTP and the admin socket'],
    ['migrate', 'bring the database schema up to date'],
    ...commands.map((c) => [c.usage, c.summary]),
  ];
  return `Usage: keyward <command> [options]

Commands:
${lines.map(([u, s]) => (u!.length > 28 ? `  ${u}\n  ${''.padEnd(28)} ${s}` : `  ${u!.padEnd(28)} ${s}`)).join('\n')}

Options:
  --config FILE     configuration file (default ca-config/keyward.yaml, or KEYWARD_CONFIG)
  --data-dir DIR    data directory (overrides dataDir)
  --json            machine-readable output
  -h, --help        this text
`;
}

function principal(): string {
  return `cli:${userInfo().username}`;
}

export async function withPassphrase(config: Config): Promise<Config> {
  if (config.rootOfTrust.type !== 'passphrase' || config.passphrase !== undefined || !process.stdin.isTTY)
    return config;
  return { ...config, passphrase: await promptSecret('Root of trust passphrase: ') };
}

/** Runs through a running server when it holds the embedded database, else in-process. */
async function execute(config: Config, command: CliCommand, input: object): Promise<unknown> {
  if (!config.databaseUrl) {
    const remote = await callAdmin(adminSocketPath(config.dataDir), commandName(command), input);
    if (remote) return remote.result;
  }
  const ctx = await openContext(await withPassphrase(config), { principal: principal() });
  try {
    return await command.run(ctx, input as never);
  } finally {
    await ctx.close();
  }
}

function findCommand(positionals: string[]): { command: CliCommand; rest: string[] } | undefined {
  const matches = commands.filter((c) => c.path.every((word, i) => positionals[i] === word));
  const best = matches.sort((a, b) => b.path.length - a.path.length)[0];
  return best ? { command: best, rest: positionals.slice(best.path.length) } : undefined;
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'agent')
    return void (process.exitCode = await (await import('../mesh/agent.ts')).runAgent(argv.slice(1)));
  const first = parseArgs({ args: argv, allowPositionals: true, strict: false, options: GLOBAL_OPTIONS });
  const positionals = first.positionals;
  if (first.values.help || positionals.length === 0) {
    process.stdout.write(usage());
    return;
  }
  const found = findCommand(positionals);
  const options = { ...GLOBAL_OPTIONS, ...found?.command.options };
  const { values, positionals: words } = parseArgs({ args: argv, allowPositionals: true, options });
  const json = values.json === true;
  const config = loadConfig({
    configFile: values.config as string | undefined,
    dataDir: values['data-dir'] as string | undefined,
  });

  if (words[0] === 'serve') return serve(await withPassphrase(config), json);
  if (words[0] === 'migrate') {
    const handle = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
    try {
      const report = await migrateToLatest(handle.db);
      process.stdout.write(
        json
          ? JSON.stringify(report, null, 2) + '\n'
          : report.applied.length
            ? `Applied ${report.applied.join(', ')}.\n`
            : 'The schema is up to date.\n',
      );
    } finally {
      await handle.close();
    }
    return;
  }
  if (!found) throw new UsageError(`unknown command "${positionals.join(' ')}"`);
  const input = { ...(await found.command.input(values, found.rest)), principal: principal() };
  const output = await execute(config, found.command, input);
  process.stdout.write(json ? JSON.stringify(output, null, 2) + '\n' : found.command.format(output));
  const code = found.command.exitCode?.(output) ?? 0;
  if (code !== 0) process.exitCode = code;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (
    err instanceof UsageError ||
    (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS'))
  ) {
    process.stderr.write(`keyward: ${(err as Error).message}\n\n${usage()}`);
    process.exitCode = 2;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`keyward: configuration error:\n${err.message}\n`);
    process.exitCode = 2;
  } else if (err instanceof RemoteError) {
    process.stderr.write(`keyward: ${err.code === 'InternalError' ? '' : `${err.code}: `}${err.message}\n`);
    process.exitCode = 1;
  } else {
    const { code, message } = describeError(err);
    process.stderr.write(`keyward: ${code === 'InternalError' ? '' : `${code}: `}${message}\n`);
    process.exitCode = 1;
  }
});
