import type { EabKey } from '../acme/eab.ts';
import { type CliCommand, defineCommand, UsageError } from './command.ts';

const eabCreate = defineCommand<{ label?: string }, EabKey>({
  path: ['eab', 'create'],
  usage: 'eab create [--label L]',
  summary: 'create an ACME External Account Binding key (printed once)',
  options: { label: { type: 'string' } },
  input: (values) => {
    const label = values.label;
    if (label !== undefined && (typeof label !== 'string' || label.length === 0 || label.length > 200)) {
      throw new UsageError('--label must be 1 to 200 characters');
    }
    return { label: label as string | undefined };
  },
  run: async (ctx, input) => (await import('../acme/eab.ts')).createEabKey(ctx.database.db, { label: input.label }),
  format: (key) => `Key ID:   ${key.keyId}
HMAC key: ${key.hmacKey}
${key.label ? `Label:    ${key.label}\n` : ''}Give both to the ACME client (certbot --eab-kid/--eab-hmac-key, lego --eab --kid/--hmac).
The HMAC key is not shown again; a binding can be used once.
`,
});

export const acmeCommands: CliCommand[] = [eabCreate];
