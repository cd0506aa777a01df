import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';
import type { DualControl, Proposal } from '../kms/dual-control.ts';
import { type CliCommand, commandName, defineCommand, UsageError } from './command.ts';

/** What a trust-changing command answers under dual control instead of its own output. */
interface Proposed {
  proposed: Proposal;
}

const isProposed = (out: unknown): out is Proposed =>
  typeof out === 'object' && out !== null && 'proposed' in out && Object.keys(out).length === 1;

/** The commands as written, before gating: what an approved proposal runs. */
const ungated = new Map<string, CliCommand>();

async function dualControl(ctx: AppContext): Promise<DualControl> {
  const { DualControl } = await import('../kms/dual-control.ts');
  return new DualControl(ctx.kms, ctx.database.db, ctx.config.kms.dualControlWindow);
}

/**
 * With `kms.dualControl` on, a command marked `dualControl` proposes instead of running (in the
 * CLI's process and in a server alike: the gate is in `run`, which both call).
 */
export function gated(command: CliCommand): CliCommand {
  if (!command.dualControl) return command;
  ungated.set(commandName(command), command);
  return {
    ...command,
    run: async (ctx, input) => {
      const summary = ctx.config.kms.dualControl ? await command.dualControl!(ctx, input) : null;
      if (summary === null) return command.run(ctx, input);
      const { principal, ...rest } = input;
      return { proposed: await (await dualControl(ctx)).propose(commandName(command), summary, rest, principal) };
    },
    format: (out) => (isProposed(out) ? describeProposed(out.proposed) : command.format(out)),
    exitCode: (out) => (isProposed(out) ? 0 : (command.exitCode?.(out) ?? 0)),
  };
}

function describeProposed(p: Proposal): string {
  return (
    `Dual control: proposal ${p.id} (${p.summary}) waits for another administrator until ${p.expires}.\n` +
    `Nothing has changed yet. They run: keyward proposals approve ${p.id}\n`
  );
}

const line = (p: Proposal) =>
  `${p.id}  ${p.state.padEnd(8)} ${p.command.padEnd(22)} by ${p.proposer}  expires ${p.expires}${p.decidedBy ? `  decided by ${p.decidedBy}` : ''}\n    ${p.summary}${p.error ? `\n    error: ${p.error}` : ''}\n`;

function proposalId(positionals: string[], what: string): { id: string } {
  if (!positionals[0]) throw new UsageError(`${what} needs a proposal ID (see keyward proposals list)`);
  return { id: positionals[0] };
}

const listCommand = defineCommand<{ all: boolean }, Proposal[]>({
  path: ['proposals', 'list'],
  usage: 'proposals list [--all]',
  summary: 'trust-changing commands waiting for a second administrator (kms.dualControl)',
  options: { all: { type: 'boolean', default: false } },
  adminHttps: true,
  input: (v) => ({ all: v.all === true }),
  run: async (ctx, input) => (await dualControl(ctx)).list(input.all),
  format: (out) => (out.length ? out.map(line).join('') : 'No pending proposals.\n'),
});

interface ApproveOutput {
  proposal: Proposal;
  output: unknown;
}

const approveCommand = defineCommand<{ id: string }, ApproveOutput>({
  path: ['proposals', 'approve'],
  usage: 'proposals approve ID',
  summary: "run another administrator's proposal (not your own; before it expires)",
  adminHttps: true,
  input: (_v, p) => proposalId(p, 'proposals approve'),
  run: async (ctx, input) => {
    const control = await dualControl(ctx);
    const { proposal, input: proposed } = await control.approve(input.id, input.principal);
    const command = ungated.get(proposal.command);
    if (!command)
      throw new KeywardError('internal', `proposal ${proposal.id} names an unknown command ${proposal.command}`);
    try {
      // It runs as the proposer asked it; the approval event names who allowed it.
      const output = await command.run(ctx, { ...proposed, principal: proposal.proposer });
      return { proposal: await control.finish(proposal.id), output };
    } catch (err) {
      await control.finish(proposal.id, err instanceof Error ? err.message : String(err));
      throw err;
    }
  },
  format: (out) => {
    const command = ungated.get(out.proposal.command);
    return `Approved ${out.proposal.id} (${out.proposal.summary}), proposed by ${out.proposal.proposer}.\n${command ? command.format(out.output) : ''}`;
  },
});

const rejectCommand = defineCommand<{ id: string }, Proposal>({
  path: ['proposals', 'reject'],
  usage: 'proposals reject ID',
  summary: 'refuse a pending proposal (its proposer may withdraw it too)',
  adminHttps: true,
  input: (_v, p) => proposalId(p, 'proposals reject'),
  run: async (ctx, input) => (await dualControl(ctx)).reject(input.id, input.principal),
  format: (out) => `Proposal ${out.id} (${out.summary}) is rejected; nothing was run.\n`,
});

export const proposalCommands: CliCommand[] = [listCommand, approveCommand, rejectCommand];
