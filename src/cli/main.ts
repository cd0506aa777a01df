import { runCli } from './run.ts';

// The `keyward` binary (bin/keyward.mjs). An exit status, not process.exit(): `serve` keeps the
// process alive through its listeners, and stdout must drain before the process ends.
const code = await runCli(process.argv.slice(2));
if (code !== 0) process.exitCode = code;
