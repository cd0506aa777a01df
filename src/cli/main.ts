import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError, type Config } from '../config/load.ts';
import { parseDuration } from '../config/duration.ts';
import { openContext, type AppContext } from '../context.ts';
import { openDatabase } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { createLogger } from '../http/log.ts';
import { adminSocketPath, startServer } from '../server.ts';
import { callAdmin, RemoteError } from './admin-client.ts';
import { describeError } from '../http/errors.ts';
import {

  remoteCommands,
  type CertificateDetail,
  type CertificateSummary,
  type InitOutput,
  type IssueOutput,
  type RemoteCommandName,
} from './commands.ts';
import type { AuditVerification } from '../kms/index.ts';
import { promptSecret } from './prompt.ts';

const USAGE = `Usage: keyward <command> [options]

Commands:
  init                         create the root and intermediate CA (does nothing if they exist)
  serve                        initialise if needed, then serve HTTPS, HTTP and the admin socket
  migrate                      bring the database schema up to date
  issue --csr FILE [--profile P] [--ttl 24h]
                               sign a CSR; prints the chain as PEM, leaf first
  certs list [--status valid|revoked] [--limit N]
  certs show SERIAL
  audit verify                 check the audit log's hash chain

Options:
  --config FILE     configuration file (default ca-config/keyward.yaml, or KEYWARD_CONFIG)
  --data-dir DIR    data directory (overrides dataDir)
  --json            machine-readable output
  -h, --help        this text
`;

class UsageError extends Error {}

interface Globals {
  json: boolean;
  config: Config;
}

function principal(): string {
  return `cli:${userInfo().username}`;
}

async function withPassphrase(config: Config): Promise<Config> {
  if (config.rootOfTrust.type !== 'passphrase' || config.passphrase !== undefined || !process.stdin.isTTY) return config;
  return { ...config, passphrase: await promptSecret('Root of trust passphrase: ') };
}

/** Runs a command through a running server when it holds the embedded database, else in-process. */
async function run<T>(g: Globals, name: RemoteCommandName, input: object): Promise<T> {
  if (!g.config.databaseUrl) {
    const remote = await callAdmin(adminSocketPath(g.config.dataDir), name, input);
    if (remote) return remote.result as T;
  }
  const ctx = await openContext(await withPassphrase(g.config), { principal: principal() });
  try {
    const fn = remoteCommands[name] as (ctx: AppContext, input: unknown) => Promise<unknown>;
    return (await fn(ctx, input)) as T;
  } finally {
    await ctx.close();
  }
}

function print(g: Globals, value: unknown, human: () => string): void {
  process.stdout.write(g.json ? JSON.stringify(value, null, 2) + '\n' : human());
}

function describeInit(out: InitOutput): string {
  const head = out.created ? 'Created a new CA.' : 'The CA already exists; nothing changed.';
  return `${head}
  root          ${out.root.subject}
                SHA-256 ${out.root.sha256Fingerprint}
                valid until ${out.root.notAfter}
  intermediate  ${out.intermediate.subject} (issuer id ${out.intermediate.id})
                valid until ${out.intermediate.notAfter}
`;
}

function certLine(c: CertificateSummary): string {
  const names = [...c.sans.dns, ...c.sans.ip, ...c.sans.uri, ...c.sans.email].join(',');
  return `${c.serial}  ${c.status.padEnd(7)}  ${c.notAfter}  ${c.profile.padEnd(10)}  ${names}`;
}

async function serve(g: Globals): Promise<void> {
  const config = await withPassphrase(g.config);
  const log = createLogger(config.log.level);
  const ctx = await openContext(config, { principal: 'keyward:serve' });
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    const init = await remoteCommands.init(ctx, { principal: 'keyward:serve' });
    server = await startServer(ctx, log);
    const banner = {
      created: init.created,
      https: server.httpsUrl,
      http: server.httpUrl,
      roots: `${server.httpUrl}/roots.pem`,
      rootFingerprint: init.root.sha256Fingerprint,
      database: ctx.database.kind,
      dataDir: config.dataDir,
    };
    print(g, banner, () =>
      `Keyward is running${init.created ? ' (new CA created)' : ''}.
  HTTPS API        ${server.httpsUrl}
  HTTP             ${server.httpUrl}
  Root certificate ${server.httpUrl}/roots.pem
  Root SHA-256     ${init.root.sha256Fingerprint}
  Database         ${ctx.database.kind === 'embedded' ? `embedded (${config.dataDir}/pg)` : 'PostgreSQL'}
Press Ctrl-C to stop.
`,
    );
  } catch (err) {
    await ctx.close();
    throw err;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      void server
        .close()
        .then(() => ctx.close())
        .then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      'data-dir': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      csr: { type: 'string' },
      profile: { type: 'string' },
      ttl: { type: 'string' },
      status: { type: 'string' },
      limit: { type: 'string' },
    },
  });
  const [command, sub, arg] = positionals;
  if (values.help || !command) {
    process.stdout.write(USAGE);
    return;
  }
  const g: Globals = { json: values.json ?? false, config: loadConfig({ configFile: values.config, dataDir: values['data-dir'] }) };

  switch (command) {
    case 'serve':
      return serve(g);
    case 'init': {
      const out = await run<InitOutput>(g, 'init', { principal: principal() });
      return print(g, out, () => describeInit(out));
    }
    case 'migrate': {
      const handle = await openDatabase({ url: g.config.databaseUrl, dataDir: g.config.dataDir });
      try {
        const report = await migrateToLatest(handle.db);
        return print(g, report, () => (report.applied.length ? `Applied ${report.applied.join(', ')}.\n` : 'The schema is up to date.\n'));
      } finally {
        await handle.close();
      }
    }
    case 'issue': {
      if (!values.csr) throw new UsageError('issue needs --csr FILE');
      let csr: string;
      try {
        csr = readFileSync(values.csr, 'utf8');
      } catch (err) {
        throw new UsageError(`--csr: cannot read ${values.csr} (${(err as NodeJS.ErrnoException).code})`);
      }
      let ttlMs: number | undefined;
      try {
        ttlMs = values.ttl ? parseDuration(values.ttl) : undefined;
      } catch (err) {
        throw new UsageError(`--ttl: ${(err as Error).message}`);
      }
      const out = await run<IssueOutput>(g, 'issue', { csr, profile: values.profile, ttlMs, principal: principal() });
      if (!g.json) process.stderr.write(`Issued serial ${out.serial} (profile ${out.profile}), valid until ${out.notAfter}.\n`);
      return print(g, out, () => out.chainPem);
    }
    case 'certs': {
      if (sub === 'list') {
        const status = values.status;
        if (status !== undefined && status !== 'valid' && status !== 'revoked') throw new UsageError('--status must be valid or revoked');
        const limit = values.limit === undefined ? undefined : Number(values.limit);
        if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UsageError('--limit must be a positive whole number');
        const out = await run<CertificateSummary[]>(g, 'certs.list', { status, limit });
        return print(g, out, () => (out.length ? out.map(certLine).join('\n') + '\n' : 'No certificates.\n'));
      }
      if (sub === 'show') {
        if (!arg) throw new UsageError('certs show needs a SERIAL');
        const out = await run<CertificateDetail>(g, 'certs.show', { serial: arg });
        return print(g, out, () => `${out.text}\n${out.pem}`);
      }
      throw new UsageError('certs needs list or show');
    }
    case 'audit': {
      if (sub !== 'verify') throw new UsageError('audit needs verify');
      const out = await run<AuditVerification>(g, 'audit.verify', {});
      print(g, out, () =>
        out.ok ? `The audit log is intact: ${out.events} events.\n` : `The audit log is broken at event ${out.firstBad!.seq}: ${out.firstBad!.detail} (${out.firstBad!.problem}).\n`,
      );
      if (!out.ok) process.exitCode = 1;
      return;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`keyward: ${err.message}\n\n${USAGE}`);
    process.exitCode = 2;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`keyward: configuration error:\n${err.message}\n`);
    process.exitCode = 2;
  } else if (err instanceof RemoteError) {
    process.stderr.write(`keyward: ${err.message}\n`);
    process.exitCode = 1;
  } else {
    const { code, message } = describeError(err);
    process.stderr.write(`keyward: ${code === 'InternalError' ? '' : `${code}: `}${message}\n`);
    process.exitCode = 1;
  }
});

