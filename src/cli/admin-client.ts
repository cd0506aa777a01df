import { existsSync } from 'node:fs';
import { request } from 'node:http';
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
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
              result?: unknown;
              error?: { code: string; message: string };
            };
            if (parsed.error) reject(new RemoteError(parsed.error.code, parsed.error.message));
            else resolve({ result: parsed.result });
          } catch {
            reject(new RemoteError('InternalError', `the server answered ${res.statusCode} with no JSON`));
          }
        });
      },
    );
    // A socket file without a listener is left over from a server that died: run locally instead.
    req.on('error', (err: NodeJS.ErrnoException) =>
      err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? resolve(undefined) : reject(err),
    );
    req.end(body);
  });
}
