import { AsyncLocalStorage } from 'node:async_hooks';

/** Where a command line reads and writes: the process's streams, or a test's buffers (runCli). */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  stdin: AsyncIterable<unknown> & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

const processIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  stdin: process.stdin,
  env: process.env,
};

// Async-scoped rather than a module variable, so that in-process runs (tests) that overlap, and a
// server answering the admin socket in the same process, never write into each other's streams.
const current = new AsyncLocalStorage<CliIo>();

export function cliIo(): CliIo {
  return current.getStore() ?? processIo;
}

export function withCliIo<T>(io: CliIo, fn: () => Promise<T>): Promise<T> {
  return current.run(io, fn);
}
