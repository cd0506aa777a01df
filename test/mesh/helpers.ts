import { type ChildProcess, spawn } from 'node:child_process';
import { request } from 'node:https';
import { join } from 'node:path';

export interface HttpsReply {
  status: number;
  contentType: string;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
}

/** One HTTPS request with our roots as the only trust anchors, optionally with a client certificate. */
export function httpsJson(
  url: string,
  opts: { method?: string; body?: unknown; ca: string; key?: string; cert?: string },
): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const data = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = request(
      url,
      {
        method: opts.method ?? (data ? 'POST' : 'GET'),
        headers: data ? { 'content-type': 'application/json' } : {},
        ca: opts.ca,
        key: opts.key,
        cert: opts.cert,
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type']),
            headers: res.headers,
            json: JSON.parse(text) as Record<string, unknown>,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const BIN = join(process.cwd(), 'bin', 'keyward.mjs');

/** A long-running child (`keyward agent`, a peer) with its output collected. */
export function spawnChild(
  args: string[],
  env: Record<string, string> = {},
): {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  line: (re: RegExp, timeoutMs?: number) => Promise<string>;
  exited: Promise<number>;
} {
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  const line = (re: RegExp, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no output matching ${re} in ${timeoutMs} ms: ${out}${err}`)),
        timeoutMs,
      );
      const check = () => {
        const m = re.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[0]);
        } else waiters.push(check);
      };
      check();
      void exited.then(() => {
        if (!re.test(out)) {
          clearTimeout(timer);
          reject(new Error(`exited before ${re}: ${out}${err}`));
        }
      });
    });
  return { child, out: () => out, err: () => err, line, exited };
}

export const keywardArgs = (...args: string[]) => [BIN, ...args];
export const tsxArgs = (file: string, ...args: string[]) => ['--import', 'tsx', file, ...args];
