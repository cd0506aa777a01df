import { createInterface } from 'node:readline';

import type { Config } from '../config/load.ts';
import { cliIo } from './io.ts';

/** Asks for a secret on the terminal without echoing it. */
export function promptSecret(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const output = rl as unknown as { _writeToOutput: (s: string) => void };
    rl.question(question, (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
    output._writeToOutput = () => {};
  });
}

/** Asks for the root-of-trust passphrase when the configuration needs one and a terminal is there. */
export async function withPassphrase(config: Config): Promise<Config> {
  if (config.rootOfTrust.type !== 'passphrase' || config.passphrase !== undefined || !cliIo().stdin.isTTY)
    return config;
  return { ...config, passphrase: await promptSecret('Root of trust passphrase: ') };
}
