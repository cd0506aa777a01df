import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import type { CliIo } from '../../src/cli/io.ts';
import { runCli } from '../../src/cli/run.ts';
import type { Serving } from '../../src/cli/serve.ts';
import type { AppContext } from '../../src/context.ts';

const BIN = join(process.cwd(), 'bin', 'keyward.mjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a `keyward` command line in this process: the same parsing, commands, error rendering and
 * exit status as the binary, on buffers and the given environment instead of the process's, and on
 * `context` when given (a test CA's: no database start per command). Tests of what a command does
 * use this; `keyward` below is for what needs the binary itself (startup,
 * signals, crash points, `serve`).
 */
export async function cli(
  args: string[],
  env: Record<string, string>,
  options: { input?: string; context?: AppContext } = {},
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    stdin: Readable.from(options.input === undefined ? [] : [Buffer.from(options.input)]),
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
  };
  const code = await runCli(args, { io, context: options.context });
  return { code, stdout, stderr };
}

/** Runs the real `keyward` command line (dist/, compiled by the global setup) in a child process. */
export function keyward(
  args: string[],
  env: Record<string, string>,
  input?: string,
  nodeOptions: string[] = [],
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeOptions, BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** Starts `keyward serve` and resolves once it prints its banner. */
export function keywardServe(
  args: string[],
  env: Record<string, string>,
): Promise<{ child: ChildProcess; banner: string; stop(): Promise<number> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}${err}`)), 60_000);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Press Ctrl-C to stop.') || out.includes('"rootFingerprint"')) {
        clearTimeout(timer);
        resolve({
          child,
          banner: out,
          stop: () =>
            new Promise((res) => {
              child.once('close', (code) => res(code ?? -1));
              child.kill('SIGTERM');
            }),
        });
      }
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}: ${err}`));
    });
  });
}

/**
 * What `keyward serve` does, in this process (`startServe`), on the configuration and data
 * directory `env` names: a restart costs a database open, not a node start, a PGlite compile and
 * the application's load (seconds of CPU). For what serving does; `keywardServe` is for the
 * process itself (its banner, SIGTERM, exit status, memory).
 */
export async function serveInProcess(env: Record<string, string>): Promise<Serving> {
  const { loadConfig } = await import('../../src/config/load.ts');
  const { startServe } = await import('../../src/cli/serve.ts');
  return startServe(loadConfig({ env }));
}
