import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { ZodError, ZodType } from 'zod';

import { armCrashPoint } from '../core/crash-points.ts';
import { KeywardError } from '../core/errors.ts';
import { configSchema, type ParsedConfig, type Profile, profileSchema } from './schema.ts';

/** A configuration file that can't be read or is invalid (kind `configuration`: exit status 2). */
export class ConfigError extends KeywardError {
  override name = 'ConfigError';
  constructor(detail: string) {
    super('configuration', detail);
  }
}

/** The one typed view of settings; nothing outside config/ reads environment variables. */
export interface Config extends Omit<ParsedConfig, 'profiles' | 'profilesDir'> {
  /** The file the settings came from, or undefined when only defaults apply. */
  file: string | undefined;
  /** Whether the file was named (--config or KEYWARD_CONFIG) rather than found by default. */
  explicitFile: boolean;
  dataDir: string;
  databaseUrl: string | undefined;
  profiles: ReadonlyMap<string, Profile>;
  /** Public base URLs (no trailing slash). */
  httpBaseUrl: string;
  httpsBaseUrl: string;
  /** Resolves the root-of-trust passphrase from its configured source, if one is set. */
  passphrase: string | undefined;
}

export interface LoadOptions {
  configFile?: string;
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Certificates of this profile identify administrators (src/http/admin-auth.ts); ACME and mesh never issue it. */
export const ADMIN_PROFILE = 'admin';

const BUILTIN_PROFILES: Record<string, unknown> = {
  // The same defaults as the shipped ca-config/profiles, whose comments say why.
  'tls-server': {
    description: 'TLS server certificates (serverAuth)',
    extKeyUsages: ['serverAuth'],
    defaultLifetime: '168h',
    maxLifetime: '2160h',
  },
  mtls: {
    description: 'Service identities for mutual TLS (serverAuth + clientAuth)',
    extKeyUsages: ['serverAuth', 'clientAuth'],
    defaultLifetime: '24h',
    maxLifetime: '720h',
    sanTypes: ['dns', 'ip', 'uri'],
    passiveRevocationAtOrBelow: '24h',
  },
  // Administrators on the HTTPS listener (src/http/admin-auth.ts). Issued only from the command
  // line (keyward issue --profile admin); never offered to ACME or mesh tokens.
  [ADMIN_PROFILE]: {
    description: 'Administrator client certificates for the HTTPS admin endpoint (clientAuth)',
    extKeyUsages: ['clientAuth'],
    defaultLifetime: '720h',
    maxLifetime: '2160h',
    sanTypes: ['uri', 'email', 'dns'],
    maxNames: 4,
  },
};

function describe(file: string, error: ZodError, prefix: (string | number)[] = []): string {
  return error.issues
    .map((issue) => {
      const path = [...prefix, ...issue.path.map(String)].join('.') || '(top level)';
      return `${file}: ${path}: ${issue.message}`;
    })
    .join('\n');
}

function readYaml(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return parseYaml(text) ?? {};
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` (line ${err.linePos[0].line})` : '';
    throw new ConfigError(`${file}${where}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
}

function validate<T>(schema: ZodType<T>, value: unknown, file: string, prefix: (string | number)[] = []): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new ConfigError(describe(file, result.error, prefix));
  return result.data;
}

function loadProfiles(dir: string): Map<string, Profile> {
  const profiles = new Map<string, Profile>();
  for (const [name, raw] of Object.entries(BUILTIN_PROFILES)) {
    profiles.set(name, { ...validate(profileSchema, raw, `built-in profile ${name}`), name });
  }
  if (!existsSync(dir)) return profiles;
  for (const entry of readdirSync(dir).sort()) {
    const match = /^([a-z0-9][a-z0-9-]*)\.ya?ml$/.exec(entry);
    if (!match) continue;
    const file = join(dir, entry);
    profiles.set(match[1]!, { ...validate(profileSchema, readYaml(file), file), name: match[1]! });
  }
  return profiles;
}

function urlFromFile(file: string | undefined, baseDir: string): string | undefined {
  if (file === undefined) return undefined;
  const path = resolve(baseDir, file);
  let url: string;
  try {
    url = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(
      `database.urlFile: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  // Never echo the content: it holds a password.
  if (!URL.canParse(url)) throw new ConfigError(`database.urlFile: ${path} does not hold a URL`);
  return url;
}

export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  // Tests only: kill the process at a named step (src/core/crash-points.ts).
  armCrashPoint(env.KEYWARD_TEST_CRASH_AT);
  const explicit = options.configFile ?? env.KEYWARD_CONFIG;
  const defaultFile = resolve(cwd, 'ca-config/keyward.yaml');
  const file = explicit ? resolve(cwd, explicit) : existsSync(defaultFile) ? defaultFile : undefined;
  if (explicit && !existsSync(file!)) throw new ConfigError(`${file}: no such configuration file`);

  const raw = file ? readYaml(file) : {};
  const parsed = validate(configSchema, raw, file ?? 'defaults');
  const baseDir = file ? dirname(file) : cwd;

  const profiles = loadProfiles(resolve(baseDir, parsed.profilesDir));
  for (const [name, profile] of Object.entries(parsed.profiles)) profiles.set(name, { ...profile, name });

  const dataDir = resolve(cwd, options.dataDir ?? env.KEYWARD_DATA_DIR ?? parsed.dataDir);
  const httpBaseUrl = (parsed.http.publicUrl ?? `http://${parsed.http.listen}`).replace(/\/+$/, '');
  const httpsHost = parsed.https.hostnames[0]!;
  const httpsPort = parsed.https.listen.slice(parsed.https.listen.lastIndexOf(':') + 1);
  const httpsBaseUrl = (
    parsed.https.publicUrl ?? `https://${httpsHost.includes(':') ? `[${httpsHost}]` : httpsHost}:${httpsPort}`
  ).replace(/\/+$/, '');
  const passphrase = parsed.rootOfTrust.type === 'passphrase' ? env[parsed.rootOfTrust.env] : undefined;

  const { profiles: _inline, profilesDir: _dir, ...rest } = parsed;
  const checkpointExport = parsed.kms.checkpointExport === '-' ? '-' : resolve(dataDir, parsed.kms.checkpointExport);
  return {
    ...rest,
    kms: { ...parsed.kms, checkpointExport },
    file,
    explicitFile: explicit !== undefined && explicit !== '',
    dataDir,
    databaseUrl:
      parsed.database.url ?? urlFromFile(parsed.database.urlFile, baseDir) ?? (env.DATABASE_URL || undefined),
    profiles,
    httpBaseUrl,
    httpsBaseUrl,
    passphrase,
  };
}
