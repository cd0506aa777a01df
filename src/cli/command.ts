import type { ParseArgsConfig } from 'node:util';

import type { AppContext } from '../context.ts';
import { KeywardError } from '../core/errors.ts';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;
export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** A mistake on the command line (kind `usage`: exit status 2, with the usage text). */
export class UsageError extends KeywardError {
  override name = 'UsageError';
  constructor(detail: string) {
    super('usage', detail);
  }
}

/** What `--help` shows for a command. */
export interface CommandSpec {
  /** Words that name it, e.g. ['certs', 'list']. */
  path: string[];
  usage: string;
  summary: string;
  /** Full help text when more than the usage line and summary is needed. */
  help?: string;
  options?: OptionSpec;
}

/**
 * One CLI command. `input` runs in the CLI process (it may read files); `run` runs wherever the
 * database is: in-process, or inside a running server through its admin socket, so input and
 * output are plain JSON. `format` renders the output for people; `--json` prints it as is.
 *
 * The registry imports every command module when the CLI starts, so a command module imports only
 * what `input` and `format` need; `run` imports the rest with `await import(…)` (see
 * test/cli/startup.test.ts, which fails when `--help` loads a database or crypto package).
 */
export interface CliCommand<I extends object = object, O = unknown> extends CommandSpec {
  /** Only `init` may create a CA; every other command refuses to run where none exists. */
  createsCa?: boolean;
  input(values: OptionValues, positionals: string[]): I | Promise<I>;
  run(ctx: AppContext, input: I & { principal: string }): Promise<O>;
  format(output: O): string;
  /**
   * Runs in the CLI process after `run`, with the input `input` made: writes what must stay on
   * this host (e.g. a private key generated here, kept under the LOCAL symbol, which JSON drops).
   */
  finish?(output: O, input: I): void | Promise<void>;
  /** Exit status for an output, when not 0 (e.g. a failed verification). */
  exitCode?(output: O): number;
  /**
   * 'required': runs only inside the running server (its admin socket, or --admin-url), never in a
   * process of the CLI's own: e.g. unseal, whose shares must reach the process that serves.
   */
  remote?: 'required';
  /** Offered on the HTTPS admin endpoint to holders of an admin certificate. */
  adminHttps?: boolean;
  /**
   * Trust-changing: with `kms.dualControl` on, running it only proposes it (dual-control.ts) and
   * another administrator approves. Returns what the approver reads, or null when this input
   * changes no trust (e.g. disabling a key that is not a CA key).
   */
  dualControl?(ctx: AppContext, input: I & { principal: string }): Promise<string | null>;
}

/**
 * A key of an input object for what stays in the CLI process: JSON.stringify skips symbol keys, so
 * it never reaches the admin socket or the HTTPS admin endpoint.
 */
export const LOCAL: unique symbol = Symbol('local');

export function defineCommand<I extends object, O>(command: CliCommand<I, O>): CliCommand {
  return command;
}

export function commandName(command: Pick<CliCommand, 'path'>): string {
  return command.path.join('.');
}

export function requireString(values: OptionValues, name: string, what: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError(`${what} needs --${name}`);
  return v;
}
