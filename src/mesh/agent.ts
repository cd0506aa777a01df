import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request } from 'node:https';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { decodeJwt } from 'jose';

import { AGENT_USAGE } from './agent-usage.ts';
import { fetchBundle, sameCertificates } from './bundle-refresh.ts';
import { newKeyAndCsr } from './csr-client.ts';

/**
 * `keyward agent`: a client process (it never opens the database) that obtains a certificate with
 * a bootstrap token, keeps it renewed over mTLS, and writes key.pem, cert.pem (leaf + chain) and
 * bundle.pem (roots, refreshed from /v1/bundle at the CA's hint) to --out. Every write is temp
 * file + rename, so readers see old or new files, never half of one; the hook runs after all three
 * are in place (reload there: between the key and the certificate renames a reader can briefly see
 * a new key with the old certificate), and again when bundle.pem alone changes.
 */

export { AGENT_USAGE };

interface AgentOptions {
  token: string;
  out: string;
  hook?: string;
  server: string;
  ca?: string;
  once: boolean;
}

interface Obtained {
  certificate: string;
  caBundle: string;
  serial: string;
  notAfter: string;
}

export class AgentError extends Error {
  override name = 'AgentError';
}

function parse(argv: string[]): AgentOptions & { bootstrap?: { url: string; fingerprint: string } } {
  const { values } = parseArgs({
    args: argv,
    options: {
      token: { type: 'string' },
      out: { type: 'string' },
      hook: { type: 'string' },
      server: { type: 'string' },
      'ca-file': { type: 'string' },
      'root-fingerprint': { type: 'string' },
      'roots-url': { type: 'string' },
      once: { type: 'boolean', default: false },
    },
  });
  if (!values.token || !values.out) throw new AgentError('agent needs --token and --out');
  if (values['ca-file'] && values['root-fingerprint'])
    throw new AgentError('--ca-file and --root-fingerprint are alternatives; give one');
  let server = values.server;
  if (!server) {
    const aud = decodeJwt(values.token).aud;
    const first = Array.isArray(aud) ? aud[0] : aud;
    if (!first) throw new AgentError('the token names no audience; pass --server');
    server = new URL(first).origin;
  }
  server = server.replace(/\/+$/, '');
  let ca: string | undefined;
  if (values['ca-file']) {
    try {
      ca = readFileSync(values['ca-file'], 'utf8');
    } catch (err) {
      throw new AgentError(`--ca-file: cannot read ${values['ca-file']} (${(err as NodeJS.ErrnoException).code})`);
    }
  }
  const fingerprint = values['root-fingerprint'];
  return {
    ...(fingerprint ? { bootstrap: { url: values['roots-url'] ?? `${server}/roots.pem`, fingerprint } } : {}),
    token: values.token,
    out: values.out,
    ...(values.hook ? { hook: values.hook } : {}),
    server,
    ...(ca ? { ca } : {}),
    once: values.once === true,
  };
}

/** TLS errors that mean "I don't know who signed this", as Node names them. */
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

const MAX_ROOTS_BYTES = 256 * 1024;
/** How often the roots are checked until the CA's first answer names its refresh hint. */
const DEFAULT_HINT_MS = 5 * 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** GET without trusting anyone: what comes back is only believed if it matches the fingerprint. */
function fetchUntrusted(url: string): Promise<string> {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new AgentError(`--roots-url: ${url} is not http(s)`);
  return new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? request : httpRequest)(
      u,
      { method: 'GET', timeout: 10_000, ...(u.protocol === 'https:' ? { rejectUnauthorized: false } : {}) },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return reject(new AgentError(`${url}: ${res.statusCode}`));
        }
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
          if (text.length > MAX_ROOTS_BYTES) req.destroy(new AgentError(`${url}: more than ${MAX_ROOTS_BYTES} bytes`));
        });
        res.on('end', () => resolve(text));
      },
    );
    req.on('timeout', () => req.destroy(new AgentError(`${url}: timed out`)));
    req.on('error', (err) => reject(err instanceof AgentError ? err : new AgentError(`${url}: ${err.message}`)));
    req.end();
  });
}

/**
 * Bootstrap by fingerprint (as `step ca bootstrap` does): fetch the CA's roots over a connection
 * nobody vouches for, keep the certificate whose SHA-256 fingerprint the operator gave (copied from
 * `keyward serve`'s banner), and trust only that one from then on.
 */
export async function bootstrapRoot(url: string, fingerprint: string): Promise<string> {
  const want = fingerprint.replace(/[:\s]/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(want))
    throw new AgentError('--root-fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons allowed');
  const pems = (await fetchUntrusted(url)).match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const seen: string[] = [];
  for (const pem of pems) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch {
      continue;
    }
    const got = cert.fingerprint256.replace(/:/g, '').toLowerCase();
    if (got === want) {
      if (!cert.ca)
        throw new AgentError(`the certificate with fingerprint ${fingerprint} at ${url} is not a CA certificate`);
      return `${pem}\n`;
    }
    seen.push(cert.fingerprint256);
  }
  throw new AgentError(
    `none of the ${pems.length} certificate(s) at ${url} has SHA-256 fingerprint ${fingerprint}${seen.length ? ` (found ${seen.join(', ')})` : ''}; refusing to trust it`,
  );
}

function post(url: string, body: unknown, tls: { ca?: string; key?: string; cert?: string }): Promise<Obtained> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
        ...tls,
        timeout: 30_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          try {
            const json = JSON.parse(text) as Record<string, unknown>;
            if (res.statusCode === 200 && typeof json.certificate === 'string' && typeof json.caBundle === 'string') {
              resolve({
                certificate: json.certificate,
                caBundle: json.caBundle,
                serial: String(json.serial),
                notAfter: String(json.notAfter),
              });
            } else {
              reject(
                new AgentError(
                  `${url}: ${res.statusCode} ${typeof json.detail === 'string' ? json.detail : text.slice(0, 200)}`,
                ),
              );
            }
          } catch {
            reject(new AgentError(`${url}: ${res.statusCode} (not JSON) ${text.slice(0, 200)}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new AgentError(`${url}: timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** Temp file in the same directory, fsync, rename: atomic on POSIX file systems. */
export function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

function runHook(hook: string, env: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', hook], { stdio: 'inherit', env: { ...process.env, ...env } });
    child.on('error', () => resolve(-1));
    child.on('close', (code) => resolve(code ?? -1));
  });
}

/** Where the agent writes its event lines and errors: the process's streams, or the command line's (tests). */
export interface AgentOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processOutput: AgentOutput = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** When to renew: two thirds of the lifetime left at receipt (notBefore is back-dated, so not that). */
export function renewAt(receivedAt: number, notAfter: number): number {
  return receivedAt + ((notAfter - receivedAt) * 2) / 3;
}

export async function runAgent(argv: string[], out: AgentOutput = processOutput): Promise<number> {
  const log = (event: Record<string, unknown>) =>
    out.stdout(JSON.stringify({ ts: new Date().toISOString(), ...event }) + '\n');
  let opts: ReturnType<typeof parse>;
  try {
    opts = parse(argv);
  } catch (err) {
    out.stderr(`keyward agent: ${(err as Error).message}\n\n${AGENT_USAGE}`);
    return 2;
  }
  if (opts.bootstrap) {
    try {
      opts.ca = await bootstrapRoot(opts.bootstrap.url, opts.bootstrap.fingerprint);
    } catch (err) {
      out.stderr(`keyward agent: ${(err as Error).message}\n`);
      return 1;
    }
  }
  mkdirSync(opts.out, { recursive: true, mode: 0o700 });
  const paths = {
    key: join(opts.out, 'key.pem'),
    cert: join(opts.out, 'cert.pem'),
    bundle: join(opts.out, 'bundle.pem'),
  };

  const runHookFor = async (serial: string) => {
    if (!opts.hook) return;
    const code = await runHook(opts.hook, {
      KEYWARD_CERT: paths.cert,
      KEYWARD_KEY: paths.key,
      KEYWARD_BUNDLE: paths.bundle,
      KEYWARD_SERIAL: serial,
    });
    if (code !== 0) log({ event: 'hook-failed', code });
  };
  const install = async (key: string, got: Obtained, event: string) => {
    writeAtomic(paths.key, key, 0o600);
    writeAtomic(paths.cert, got.certificate, 0o644);
    writeAtomic(paths.bundle, got.caBundle, 0o644);
    log({ event, serial: got.serial, notAfter: got.notAfter });
    await runHookFor(got.serial);
  };

  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      // setTimeout fires at once for delays past 2^31-1 ms (about 24.8 days).
      const t = setTimeout(resolve, Math.min(MAX_TIMER_MS, Math.max(0, ms)));
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });

  try {
    let fresh = await newKeyAndCsr();
    let current: Obtained;
    try {
      current = await post(
        `${opts.server}/v1/sign`,
        { csr: fresh.csrPem, token: opts.token },
        opts.ca ? { ca: opts.ca } : {},
      );
    } catch (err) {
      const untrusted = !opts.ca && UNTRUSTED.has((err as NodeJS.ErrnoException).code ?? '');
      out.stderr(
        `keyward agent: ${(err as Error).message}${untrusted ? '\n  the system trust store does not know this CA: pass --ca-file roots.pem or --root-fingerprint SHA256 (keyward serve prints it)' : ''}\n`,
      );
      return 1;
    }
    let currentKey = fresh.keyPem;
    let receivedAt = Date.now();
    await install(currentKey, current, 'issued');
    if (opts.once) return 0;

    // Between renewals the roots are checked at the CA's refresh hint, so a root rollover reaches
    // bundle.pem (and the hook) long before any peer presents a certificate under the new root.
    let hintMs = DEFAULT_HINT_MS;
    const refreshBundle = async (): Promise<number> => {
      try {
        const got = await fetchBundle(opts.server, current.caBundle);
        hintMs = got.refreshHintMs;
        if (!sameCertificates(got.pem, current.caBundle)) {
          current = { ...current, caBundle: got.pem };
          writeAtomic(paths.bundle, got.pem, 0o644);
          log({ event: 'bundle-updated', roots: got.pem.match(/BEGIN CERTIFICATE/g)!.length, sequence: got.sequence });
          await runHookFor(current.serial);
        }
        return hintMs;
      } catch (err) {
        log({ event: 'bundle-refresh-failed', error: (err as Error).message });
        return Math.min(hintMs, 30_000);
      }
    };
    let renewDue = renewAt(receivedAt, Date.parse(new X509Certificate(current.certificate).validTo));
    let bundleDue = Date.now();

    while (!stopped) {
      const now = Date.now();
      if (now >= bundleDue) {
        bundleDue = Date.now() + (await refreshBundle());
        continue;
      }
      if (now < renewDue) {
        await sleep(Math.min(renewDue, bundleDue) - now);
        continue;
      }
      const expires = Date.parse(new X509Certificate(current.certificate).validTo);
      if (now >= expires) {
        out.stderr(
          `keyward agent: the certificate expired at ${new Date(expires).toISOString()} before it could be renewed; a new bootstrap token is needed\n`,
        );
        return 1;
      }
      try {
        fresh = await newKeyAndCsr();
        const got = await post(
          `${opts.server}/v1/renew`,
          { csr: fresh.csrPem },
          { ca: current.caBundle, key: currentKey, cert: current.certificate },
        );
        receivedAt = Date.now();
        current = got;
        currentKey = fresh.keyPem;
        await install(currentKey, current, 'renewed');
        renewDue = renewAt(receivedAt, Date.parse(new X509Certificate(current.certificate).validTo));
      } catch (err) {
        const retry = Math.max(250, Math.min(30_000, (expires - Date.now()) / 10));
        log({ event: 'renew-failed', error: (err as Error).message, retryInMs: Math.round(retry) });
        renewDue = Date.now() + retry;
      }
    }
    return 0;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}
