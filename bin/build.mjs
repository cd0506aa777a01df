#!/usr/bin/env node
// Compiles src/ and migrations/ to dist/ with tsc (tsconfig.build.json), only when the sources
// changed since the last build: a digest of every source file is kept in dist/.sources.sha256.
// Runs from `npm ci` (prepare), before `npm start`, and in the test suites' global setup, so
// the command line that users and spawned-CLI tests run is never older than the sources.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const stamp = join(dist, '.sources.sha256');
const lock = join(root, '.tmp', 'build.lock');

function files(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : /\.tsx?$/.test(e.name) ? [join(dir, e.name)] : []))
    .sort();
}

function digest() {
  const hash = createHash('sha256');
  for (const name of ['package.json', 'tsconfig.json', 'tsconfig.build.json'])
    hash.update(readFileSync(join(root, name)));
  for (const file of [...files(join(root, 'src')), ...files(join(root, 'migrations'))]) {
    hash.update(file.slice(root.length)).update('\0').update(readFileSync(file));
  }
  return hash.digest('hex');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One build at a time per checkout (two test runs may start together); a dead holder's lock expires. */
async function withLock(fn) {
  mkdirSync(dirname(lock), { recursive: true });
  for (let i = 0; ; i++) {
    try {
      closeSync(openSync(lock, 'wx'));
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      if (Date.now() - statSync(lock, { throwIfNoEntry: false })?.mtimeMs > 300_000) rmSync(lock, { force: true });
      else if (i > 3000) throw new Error(`${lock} is held; remove it if no build is running`, { cause: err });
      await sleep(100);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

export async function build({ quiet = false } = {}) {
  const want = digest();
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return false;
  return withLock(() => {
    if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return false;
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    if (!quiet) process.stderr.write('keyward: compiling src/ to dist/ …\n');
    try {
      execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'pipe' });
    } catch (err) {
      // Type errors still emit JavaScript (npm run typecheck reports them); anything else is fatal.
      const out = `${err.stdout ?? ''}${err.stderr ?? ''}`;
      if (err.status !== 2 || !existsSync(join(dist, 'src', 'cli', 'main.js')))
        throw new Error(`tsc failed:\n${out}`, { cause: err });
      if (!quiet) process.stderr.write(`keyward: built with type errors (npm run typecheck):\n${out}`);
    }
    writeFileSync(stamp, want);
    return true;
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await build({ quiet: process.argv.includes('--quiet') });
}
