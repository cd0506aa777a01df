import { existsSync, readFileSync } from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';

import { isErrorKind, KeywardError, kindForStatus } from '../core/errors.ts';

// The client side of the admin protocol (admin.ts). Kept light: the CLI loads it on every run,
// before it knows whether it needs a database.

export function adminSocketPath(dataDir: string): string {
  return join(dataDir, 'admin.sock');
}

/** Header naming the configuration file a command was given explicitly (the server compares). */
export const CONFIG_HEADER = 'x-keyward-config';

/**
 * Calls a command on the running server through its admin socket; undefined when none listens.
 * A refusal comes back as the KeywardError the server raised, so the CLI renders it exactly as if
 * the command had run in-process. `configFile` is the file the caller was told to use (--config /
 * KEYWARD_CONFIG), if any: a server running with another one refuses rather than silently using
 * its own.
 */
export async function callAdmin(
  socketPath: string,
  command: string,
  input: unknown,
  configFile?: string,
): Promise<{ result: unknown } | undefined> {
  if (!existsSync(socketPath)) return undefined;
  const body = JSON.stringify(input);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        // A connection per call: a kept-alive one is closed by the server once idle for its
        // keepAliveTimeout, and a call written to it while the server's event loop was busy (a
        // caller in the server's own process) was reset (read ECONNRESET) instead of answered.
        agent: false,
        path: `/v1/${command}`,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(configFile ? { [CONFIG_HEADER]: encodeURIComponent(configFile) } : {}),
        },
      },
      (res) => readAnswer(res, resolve, reject),
    );
    // A socket file without a listener is left over from a server that died: run locally instead.
    req.on('error', (err: NodeJS.ErrnoException) =>
      err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? resolve(undefined) : reject(err),
    );
    req.end(body);
  });
}

/** Whether a server answers on the socket; any answer, a refusal included, means one holds it. */
export async function serverRunning(socketPath: string): Promise<boolean> {
  return callAdmin(socketPath, 'ca.issuers', {}).then(
    (result) => result !== undefined,
    (err: unknown) => err instanceof KeywardError,
  );
}

function readAnswer(
  res: IncomingMessage,
  resolve: (v: { result: unknown }) => void,
  reject: (err: Error) => void,
): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    let parsed: { result?: unknown; error?: unknown; code?: unknown; detail?: unknown };
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof parsed;
    } catch {
      reject(new KeywardError('internal', `the server answered ${res.statusCode} with no JSON`));
      return;
    }
    if (parsed.error !== undefined) reject(KeywardError.fromJSON(parsed.error));
    // A problem document from before the admin protocol (the HTTPS listener's sealed guard, a 404).
    else if (typeof parsed.detail === 'string')
      reject(
        new KeywardError(isErrorKind(parsed.code) ? parsed.code : kindForStatus(res.statusCode ?? 500), parsed.detail),
      );
    else resolve({ result: parsed.result });
  });
}

export interface AdminHttpsTarget {
  /** The server's HTTPS base URL, e.g. https://ca-2.internal:8443 */
  url: string;
  /** Files: the admin certificate, its key, and the CA roots that vouch for the server. */
  cert: string;
  key: string;
  ca: string;
}

/** Calls a command on a server's HTTPS admin endpoint, authenticated by an admin certificate. */
export function callAdminHttps(target: AdminHttpsTarget, command: string, input: unknown): Promise<unknown> {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new KeywardError('usage', `--admin-${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
    }
  };
  const body = JSON.stringify(input);
  const url = new URL(`/admin/v1/${command}`, target.url);
  const options = { cert: read(target.cert, 'cert'), key: read(target.key, 'key'), ca: read(target.ca, 'ca') };
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        method: 'POST',
        ...options,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 30_000,
      },
      (res) => readAnswer(res, (v) => resolve(v.result), reject),
    );
    req.on('timeout', () => req.destroy(new KeywardError('unavailable', `${url.origin} did not answer within 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
}
