import { asKeywardError, KeywardError } from '../core/errors.ts';
import { cliIo } from './io.ts';

function fromThrown(thrown: unknown): KeywardError {
  // node:util parseArgs refuses unknown options and missing values with a coded TypeError.
  const code = (thrown as NodeJS.ErrnoException | null)?.code;
  if (thrown instanceof TypeError && typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
    return new KeywardError('usage', thrown.message);
  return asKeywardError(thrown);
}

/**
 * The CLI's one renderer of errors: a line on stderr naming the code (or, with `--json`, the
 * error as JSON on stderr, so stdout carries only results), and the exit status of its kind.
 * Returns the exit status.
 */
export function renderCliError(thrown: unknown, options: { json: boolean }): number {
  const err = fromThrown(thrown);
  if (options.json) {
    cliIo().stderr(JSON.stringify({ error: err.toJSON() }) + '\n');
  } else if (err.code === 'configuration') {
    cliIo().stderr(`keyward: configuration error:\n${err.message}\n`);
  } else if (err.kind === 'usage') {
    cliIo().stderr(`keyward: ${err.message} (see keyward --help)\n`);
  } else {
    cliIo().stderr(`keyward: ${err.kind === 'internal' ? '' : `${err.code}: `}${err.message}\n`);
  }
  return err.exitCode;
}
