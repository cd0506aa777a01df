import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';

import type { Config } from '../config/load.ts';
import type { AppContext } from '../context.ts';
import { adminSocketPath, callAdmin, callAdminHttps } from '../http/admin-client.ts';
import { AGENT_USAGE } from '../mesh/agent-usage.ts';
import { type CliCommand, commandName, type CommandSpec, type OptionSpec, UsageError } from './command.ts';
import { commandHelp, usage, version } from './help.ts';
import { type CliIo, cliIo, withCliIo } from './io.ts';
import { withPassphrase } from './prompt.ts';
import { commands } from './registry.ts';
import { renderCliError } from './render-error.ts';

// Only what every invocation needs is imported above: `--help`, `--version` and a command sent to
// a running server's admin socket load no database, crypto or HTTP-server package. The rest is
// imported by the command that needs it.

const GLOBAL_OPTIONS: OptionSpec = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'V', default: false },
  'admin-url': { type: 'string' },
  'admin-cert': { type: 'string' },
  'admin-key': { type: 'string' },
  'admin-ca': { type: 'string' },
};

/** Commands that own the process rather than run against the CA. */
const PROCESS_COMMANDS: CommandSpec[] = [
  {
    path: ['serve'],
    usage: 'serve',
    summary: 'create the CA on first run, then serve HTTPS, HTTP and the admin socket',
  },
  { path: ['migrate'], usage: 'migrate', summary: 'bring the database schema up to date' },
  {
    path: ['agent'],
    usage: 'agent --token T --out DIR [--hook CMD] [--ca-file F | --root-fingerprint SHA256]',
    summary: 'get a mesh certificate with a bootstrap token and keep it renewed (a client; no database)',
    help: AGENT_USAGE,
  },
];

const SPECS: readonly CommandSpec[] = [...PROCESS_COMMANDS, ...commands];

function principal(): string {
  return `cli:${userInfo().username}`;
}

function findCommand<T extends CommandSpec>(
  specs: readonly T[],
  words: string[],
): { command: T; rest: string[] } | undefined {
  const matches = specs.filter((c) => c.path.every((word, i) => words[i] === word));
  const best = matches.sort((a, b) => b.path.length - a.path.length)[0];
  return best ? { command: best, rest: words.slice(best.path.length) } : undefined;
}

/**
 * Runs on another server's HTTPS admin endpoint (--admin-url), or through the local server's admin
 * socket when it holds the embedded database, the root is a shares root, or the command must run in
 * the server; else in-process, on a context of its own (or the caller's, `RunOptions.context`).
 */
async function execute(
  config: Config,
  command: CliCommand,
  input: object,
  values: Record<string, unknown>,
  context: AppContext | undefined,
): Promise<unknown> {
  if (typeof values['admin-url'] === 'string') {
    const need = (name: string) => {
      const v = values[name];
      if (typeof v !== 'string') throw new UsageError(`--admin-url needs --${name}`);
      return v;
    };
    return callAdminHttps(
      { url: values['admin-url'], cert: need('admin-cert'), key: need('admin-key'), ca: need('admin-ca') },
      commandName(command),
      input,
    );
  }
  // With a shares root only a running server, once unsealed, holds the root key: commands go there
  // when one runs here, whatever the database (a process of the CLI's own would be sealed).
  if (!config.databaseUrl || command.remote === 'required' || config.rootOfTrust.type === 'shares') {
    const socket = adminSocketPath(config.dataDir);
    const remote = await callAdmin(socket, commandName(command), input, config.explicitFile ? config.file : undefined);
    if (remote) return remote.result;
    if (command.remote === 'required')
      throw new UsageError(
        `${command.path.join(' ')} talks to a running keyward serve, and none answers on ${socket} (another host: --admin-url)`,
      );
  }
  if (context) return command.run(context, input as never);
  const { openContext } = await import('../context.ts');
  const ctx = await openContext(await withPassphrase(config), {
    principal: principal(),
    create: command.createsCa === true,
  });
  try {
    return await command.run(ctx, input as never);
  } finally {
    await ctx.close();
  }
}

async function loadConfig(values: Record<string, unknown>): Promise<Config> {
  const { loadConfig } = await import('../config/load.ts');
  return loadConfig({
    configFile: values.config as string | undefined,
    dataDir: values['data-dir'] as string | undefined,
    env: cliIo().env,
  });
}

function print(json: boolean, value: unknown, text: () => string): void {
  cliIo().stdout(json ? JSON.stringify(value, null, 2) + '\n' : text());
}

async function main(argv: string[], context: AppContext | undefined): Promise<number> {
  const first = parseArgs({ args: argv, allowPositionals: true, strict: false, options: GLOBAL_OPTIONS });
  if (first.values.version) {
    print(first.values.json === true, { version: version() }, () => `${version()}\n`);
    return 0;
  }
  const found = findCommand(SPECS, first.positionals);
  if (first.values.help || first.positionals.length === 0) {
    const words = found ? found.command.path : first.positionals;
    const help = words.length ? commandHelp(SPECS, words) : usage(SPECS);
    if (!help) throw new UsageError(`unknown command "${words.join(' ')}"`);
    cliIo().stdout(help);
    return 0;
  }
  if (!found) throw new UsageError(`unknown command "${first.positionals.join(' ')}"`);
  const name = found.command.path[0];

  if (name === 'agent') {
    const { runAgent } = await import('../mesh/agent.ts');
    return runAgent(
      argv.filter((a, i) => i !== argv.indexOf('agent')),
      cliIo(),
    );
  }

  const options = { ...GLOBAL_OPTIONS, ...found.command.options };
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options });
  const json = values.json === true;
  const config = await loadConfig(values);

  if (name === 'serve') {
    await (await import('./serve.ts')).serve(await withPassphrase(config), json);
    return 0;
  }
  if (name === 'migrate') {
    const report = await (await import('./migrate.ts')).migrate(config);
    print(json, report, () =>
      report.applied.length ? `Applied ${report.applied.join(', ')}.\n` : 'The schema is up to date.\n',
    );
    return 0;
  }

  const command = found.command as CliCommand;
  const rest = positionals.slice(command.path.length);
  const input = { ...(await command.input(values, rest)), principal: principal() };
  const output = await execute(config, command, input, values, context);
  await command.finish?.(output, input);
  print(json, output, () => command.format(output));
  return command.exitCode?.(output) ?? 0;
}

export interface RunOptions {
  /** Streams and environment instead of the process's. */
  io?: CliIo;
  /**
   * A context already open on the configured CA: a command that would open one of its own runs
   * on it instead. Tests use it so that a command costs no database start (seconds with PGlite).
   */
  context?: AppContext;
}

/**
 * Runs one command line and returns its exit status; errors are rendered, never thrown. The
 * `keyward` binary runs it on the process's streams (main.ts); tests run it in-process.
 */
export async function runCli(argv: string[], options: RunOptions = {}): Promise<number> {
  const { io, context } = options;
  const run = async () => {
    try {
      return await main(argv, context);
    } catch (err: unknown) {
      return renderCliError(err, { json: argv.includes('--json') });
    }
  };
  return io ? withCliIo(io, run) : run();
}
