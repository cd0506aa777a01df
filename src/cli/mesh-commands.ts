import { parseDuration } from '../config/duration.ts';
import { KeywardError } from '../core/errors.ts';
import type { CreatedToken } from '../mesh/tokens.ts';
import { addRule, configRules, describeRule, listRules, type PolicyRule, removeRule } from '../policy/rules.ts';
import { type CliCommand, defineCommand, requireString, UsageError } from './command.ts';

const strings = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : [];

const policyAdd = defineCommand<
  { scope: string; effect: 'allow' | 'deny'; pattern: string },
  { rule: PolicyRule; created: boolean }
>({
  path: ['policy', 'add'],
  usage: 'policy add --scope global|issuer:<id>|account:<id>|eab:<kid> --allow|--deny PATTERN',
  summary: 'add a name policy rule (deny wins; see src/policy/patterns.ts for patterns)',
  options: { scope: { type: 'string', default: 'global' }, allow: { type: 'string' }, deny: { type: 'string' } },
  input: (values) => {
    const allow = values.allow;
    const deny = values.deny;
    if ((typeof allow === 'string') === (typeof deny === 'string'))
      throw new UsageError('policy add needs exactly one of --allow PATTERN or --deny PATTERN');
    return {
      scope: String(values.scope),
      effect: typeof allow === 'string' ? 'allow' : 'deny',
      pattern: String(allow ?? deny),
    };
  },
  run: (ctx, input) => addRule(ctx.database.db, { ...input, principal: input.principal }),
  format: (out) => `${out.created ? 'Added' : 'Already present:'} ${describeRule(out.rule)}\n`,
});

const policyList = defineCommand<{ scope?: string }, PolicyRule[]>({
  path: ['policy', 'list'],
  usage: 'policy list [--scope S] [--json]',
  summary: 'list name policy rules (configured global rules first)',
  options: { scope: { type: 'string' } },
  input: (values) => (typeof values.scope === 'string' ? { scope: values.scope } : {}),
  run: async (ctx, input) => {
    const all = [...configRules(ctx.config.policy.rules), ...(await listRules(ctx.database.db))];
    return input.scope ? all.filter((r) => r.scope === input.scope) : all;
  },
  format: (rules) =>
    rules.length === 0
      ? 'No policy rules.\n'
      : rules
          .map(
            (r) =>
              `${r.id.padEnd(36)}  ${r.scope.padEnd(20)}  ${r.effect.padEnd(5)}  ${r.kind.padEnd(5)}  ${r.pattern}${r.source === 'config' ? '  (config)' : ''}`,
          )
          .join('\n') + '\n',
});

const policyRemove = defineCommand<{ id: string }, { id: string; removed: boolean }>({
  path: ['policy', 'remove'],
  usage: 'policy remove ID',
  summary: 'remove a name policy rule (configured rules are changed in the config file)',
  input: (_values, positionals) => {
    if (positionals.length !== 1) throw new UsageError('policy remove needs one rule ID');
    return { id: positionals[0]! };
  },
  run: async (ctx, input) => {
    if (input.id.startsWith('config:'))
      throw new KeywardError(
        'conflict',
        `rule ${input.id} comes from the configuration file; change policy.rules there`,
      );
    return { id: input.id, removed: await removeRule(ctx.database.db, input.id) };
  },
  format: (out) => (out.removed ? `Removed rule ${out.id}.\n` : `No rule ${out.id}.\n`),
  exitCode: (out) => (out.removed ? 0 : 1),
});

const tokenCreate = defineCommand<
  { id?: string; dns: string[]; ip: string[]; ttlMs?: number; profile?: string },
  CreatedToken
>({
  path: ['token', 'create'],
  usage: 'token create --id URI [--dns NAME ...] [--ip ADDR ...] [--ttl 5m] [--profile mtls]',
  summary: 'print a one-time bootstrap token for POST /v1/sign (keyward agent --token)',
  options: {
    id: { type: 'string' },
    dns: { type: 'string', multiple: true },
    ip: { type: 'string', multiple: true },
    ttl: { type: 'string' },
    profile: { type: 'string' },
  },
  input: (values) => {
    let ttlMs: number | undefined;
    try {
      ttlMs = typeof values.ttl === 'string' ? parseDuration(values.ttl) : undefined;
    } catch (err) {
      throw new UsageError(`--ttl: ${(err as Error).message}`);
    }
    const id = typeof values.id === 'string' ? values.id : undefined;
    const dns = strings(values.dns);
    const ip = strings(values.ip);
    if (!id && dns.length === 0 && ip.length === 0) requireString(values, 'id', 'token create');
    return {
      ...(id ? { id } : {}),
      dns,
      ip,
      ...(ttlMs ? { ttlMs } : {}),
      ...(typeof values.profile === 'string' ? { profile: values.profile } : {}),
    };
  },
  run: async (ctx, input) =>
    (await import('../mesh/tokens.ts')).createBootstrapToken(
      { config: ctx.config, db: ctx.database.db, kms: ctx.kms, issuance: ctx.issuance },
      { ...input, principal: input.principal },
    ),
  format: (out) => `${out.token}\n`,
});

export const meshCommands: readonly CliCommand[] = [policyAdd, policyList, policyRemove, tokenCreate];
