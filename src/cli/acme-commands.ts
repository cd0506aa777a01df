import type { EabKey } from '../acme/eab.ts';
import type {
  AccountDeactivation,
  AccountSummary,
  EabKeyState,
  EabKeySummary,
  EabRevocation,
} from '../acme/operator.ts';
import type { AcmeAccountStatus } from '../db/acme-schema.ts';
import { type CliCommand, defineCommand, type OptionValues, UsageError } from './command.ts';

const operator = () => import('../acme/operator.ts');

function limitOption(values: OptionValues): number | undefined {
  if (values.limit === undefined) return undefined;
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
    throw new UsageError('--limit must be a whole number from 1 to 1000');
  return limit;
}

function choice<T extends string>(values: OptionValues, name: string, allowed: readonly T[]): T | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
    throw new UsageError(`--${name} must be one of ${allowed.join(', ')}`);
  return v as T;
}

function onePositional(positionals: string[], what: string): string {
  if (positionals.length !== 1 || !positionals[0]) throw new UsageError(`${what} needs exactly one ID`);
  if (positionals[0].length > 200) throw new UsageError(`${what}: the ID is too long`);
  return positionals[0];
}

const eabCreate = defineCommand<{ label?: string }, EabKey>({
  path: ['eab', 'create'],
  usage: 'eab create [--label L]',
  summary: 'create an ACME External Account Binding key (printed once)',
  options: { label: { type: 'string' } },
  adminHttps: true,
  input: (values) => {
    const label = values.label;
    if (label !== undefined && (typeof label !== 'string' || label.length === 0 || label.length > 200)) {
      throw new UsageError('--label must be 1 to 200 characters');
    }
    return { label: label as string | undefined };
  },
  run: async (ctx, input) => (await operator()).createEab(ctx.database.db, ctx.kms, input.label, input.principal),
  format: (key) => `Key ID:   ${key.keyId}
HMAC key: ${key.hmacKey}
${key.label ? `Label:    ${key.label}\n` : ''}Give both to the ACME client (certbot --eab-kid/--eab-hmac-key, lego --eab --kid/--hmac).
The HMAC key is not shown again; a binding can be used once.
`,
});

const EAB_STATES: readonly EabKeyState[] = ['unused', 'bound', 'revoked'];

const eabList = defineCommand<{ state?: EabKeyState; limit?: number }, EabKeySummary[]>({
  path: ['eab', 'list'],
  usage: 'eab list [--state unused|bound|revoked] [--limit N]',
  summary: 'list External Account Binding keys, newest first (never their HMAC keys)',
  options: { state: { type: 'string' }, limit: { type: 'string' } },
  adminHttps: true,
  input: (values) => ({ state: choice(values, 'state', EAB_STATES), limit: limitOption(values) }),
  run: async (ctx, input) => (await operator()).listEabKeys(ctx.database.db, input),
  format: (keys) =>
    keys.length
      ? keys
          .map(
            (k) =>
              `${k.keyId}  ${k.state.padEnd(7)}  ${k.createdAt}  ${k.accountId ? `account ${k.accountId}` : '-'}  ${k.label ?? ''}`.trimEnd() +
              '\n',
          )
          .join('')
      : 'No EAB keys.\n',
});

const eabRevoke = defineCommand<{ keyId: string }, EabRevocation>({
  path: ['eab', 'revoke'],
  usage: 'eab revoke KEY_ID',
  summary: 'revoke an EAB key: it binds no new account, and the account it bound is revoked',
  adminHttps: true,
  input: (_values, positionals) => ({ keyId: onePositional(positionals, 'eab revoke') }),
  run: async (ctx, input) =>
    (await operator()).revokeEabKey(ctx.database.db, ctx.kms.audit, input.keyId, input.principal),
  format: (r) =>
    r.changed
      ? `Revoked EAB key ${r.keyId} at ${r.revokedAt}.\n${r.accountRevoked ? `Its account ${r.accountRevoked} is revoked: its requests are refused and its pending orders invalid.\n` : 'It had bound no account.\n'}`
      : `EAB key ${r.keyId} was already revoked (at ${r.revokedAt}); nothing changed.\n`,
});

const ACCOUNT_STATES: readonly AcmeAccountStatus[] = ['valid', 'deactivated', 'revoked'];

const accountsList = defineCommand<{ status?: AcmeAccountStatus; limit?: number }, AccountSummary[]>({
  path: ['acme', 'accounts', 'list'],
  usage: 'acme accounts list [--status valid|deactivated|revoked] [--limit N]',
  summary: 'list ACME accounts, newest first',
  options: { status: { type: 'string' }, limit: { type: 'string' } },
  adminHttps: true,
  input: (values) => ({ status: choice(values, 'status', ACCOUNT_STATES), limit: limitOption(values) }),
  run: async (ctx, input) => (await operator()).listAccounts(ctx.database.db, input),
  format: (accounts) =>
    accounts.length
      ? accounts
          .map(
            (a) =>
              `${a.id}  ${a.status.padEnd(11)}  ${a.createdAt}  ${a.eabKeyId ? `eab ${a.eabKeyId}` : '-'}  ${a.contact.join(',')}`.trimEnd() +
              '\n',
          )
          .join('')
      : 'No ACME accounts.\n',
});

const accountsDeactivate = defineCommand<{ id: string }, AccountDeactivation>({
  path: ['acme', 'accounts', 'deactivate'],
  usage: 'acme accounts deactivate ACCOUNT_ID',
  summary: 'deactivate an ACME account: its requests are refused and its pending orders become invalid',
  adminHttps: true,
  input: (_values, positionals) => ({ id: onePositional(positionals, 'acme accounts deactivate') }),
  run: async (ctx, input) =>
    (await operator()).deactivateAccount(ctx.database.db, ctx.kms.audit, input.id, input.principal),
  format: (r) =>
    r.changed
      ? `Deactivated ACME account ${r.account.id}: its requests are refused and its pending orders are invalid.\n`
      : `ACME account ${r.account.id} is already ${r.account.status}; nothing changed.\n`,
});

export const acmeCommands: CliCommand[] = [eabCreate, eabList, eabRevoke, accountsList, accountsDeactivate];
