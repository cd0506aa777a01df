#!/usr/bin/env node
// Runs the compiled command line (dist/, built by `npm ci`, `npm start` and the test setup from src/).
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('keyward: dist/ is missing; run `npm ci` or `node bin/build.mjs` first\n');
  process.exit(2);
}
await import(main.href);
