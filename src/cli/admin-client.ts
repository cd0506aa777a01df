import { existsSync, readFileSync } from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';

export class RemoteError extends Error {
  override name = 'RemoteError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function adminSocketPath(dataDir: string): string {
  return join(dataDir, 'admin.sock');
}

/** Header naming the configuration file a command was given explicitly (the server compares). */
export const CONFIG_HEADER = 'x-keyward-config';

/**
 * Calls a command on the running server through its admin socket; undefined when none listens.
 * `configFile` is the file the caller was told to use (--config / KEYWARD_CONFIG), if any: a server
 * running with another one refuses rather than silently using its own.
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

function readAnswer(
  res: IncomingMessage,
  resolve: (v: { result: unknown }) => void,
  reject: (err: Error) => void,
): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    try {
      const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        result?: unknown;
        error?: { code: string; message: string };
        // problem+json from the HTTPS admin endpoint's authentication
        title?: string;
        detail?: string;
      };
      if (parsed.error) reject(new RemoteError(parsed.error.code, parsed.error.message));
      else if (parsed.detail !== undefined) reject(new RemoteError(parsed.title ?? 'Unauthorized', parsed.detail));
      else resolve({ result: parsed.result });
    } catch {
      reject(new RemoteError('InternalError', `the server answered ${res.statusCode} with no JSON`));
    }
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
      throw new RemoteError(
        'InvalidInput',
        `--admin-${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`,
      );
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
    req.on('timeout', () => req.destroy(new Error(`${url.origin} did not answer within 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
}
