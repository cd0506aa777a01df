import type { PublishedCrl } from '../ca/crl-publisher.ts';
import { allowedReasonNames, reasonCode, reasonName } from '../ca/revocation-reasons.ts';
import { type CliCommand, defineCommand, UsageError } from './command.ts';

interface RevokeOutput {
  serial: string;
  issuerId: string;
  revokedAt: string;
  reason: string;
}

const revokeCommand = defineCommand<{ serial: string; reason: string }, RevokeOutput>({
  path: ['revoke'],
  usage: 'revoke SERIAL [--reason R]',
  summary: `revoke a certificate (reasons: ${allowedReasonNames().join(', ')}; default unspecified)`,
  options: { reason: { type: 'string' } },
  input: (values, positionals) => {
    const reason = typeof values.reason === 'string' ? values.reason : 'unspecified';
    // The command is located before its own options are known, so the value of --reason may show
    // up among the positionals; drop it (no reason name is a hexadecimal serial).
    const words = [...positionals];
    const i = typeof values.reason === 'string' ? words.indexOf(values.reason) : -1;
    if (i >= 0) words.splice(i, 1);
    if (!words[0] || words.length > 1) throw new UsageError('revoke needs exactly one SERIAL');
    // Checked here too, so a typo is a usage error before anything is contacted.
    try {
      reasonCode(reason);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    return { serial: words[0], reason };
  },
  // The same path ACME revokeCert takes: the CRL shard goes stale and the cached OCSP answer goes.
  run: async (ctx, input) => {
    const r = await ctx.ca.revoke(input.serial, reasonCode(input.reason), input.principal);
    return {
      serial: r.serial,
      issuerId: r.issuerId,
      revokedAt: r.revokedAt.toISOString(),
      reason: reasonName(r.reason),
    };
  },
  format: (out) =>
    `Revoked ${out.serial} (${out.reason}) at ${out.revokedAt}.\nOCSP answers "revoked" now; the CRL follows within revocation.crlPublishDelay (or run \`keyward crl publish\`).\n`,
});

interface CrlPublishOutput {
  published: PublishedCrl[];
  busy: { issuerId: string; shard: number }[];
}

const crlPublishCommand = defineCommand<object, CrlPublishOutput>({
  path: ['crl', 'publish'],
  usage: 'crl publish',
  summary: 'publish a new CRL for every issuer and shard now',
  input: () => ({}),
  run: async (ctx, input) => {
    const [{ RevocationPublisher }, { publishDue }] = await Promise.all([
      import('../ca/revocation-publisher.ts'),
      import('../ca/crl-publisher.ts'),
    ]);
    const service = new RevocationPublisher(ctx, input.principal);
    return publishDue(service.crl, { force: true });
  },
  format: (out) =>
    out.published
      .map(
        (p) =>
          `CRL #${p.crlNumber} for ${p.issuerId} shard ${p.shard}: ${p.entries} entries, next update ${p.nextUpdate}\n  ${p.url}\n`,
      )
      .join('') +
    out.busy.map((b) => `${b.issuerId} shard ${b.shard}: another replica is publishing it right now\n`).join(''),
});

export const revocationCommands: CliCommand[] = [revokeCommand, crlPublishCommand];
