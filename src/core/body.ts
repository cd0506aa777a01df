import type { Readable } from 'node:stream';

import { KeywardError } from './errors.ts';

/**
 * A request body of at most `max` bytes, read as it streams: a declared Content-Length over the
 * limit is refused before reading anything, and a body sent without one (chunked) is refused as
 * soon as it passes the limit, so no request costs more than `max` bytes of memory however large
 * it claims or turns out to be. A client that drops the connection mid-body is told apart from a
 * fault of ours (`clientAborted`, logged at info).
 */
export async function readBody(
  req: Request,
  max: number,
  what = 'the request body',
  /** The node request behind `req`, when there is one: read directly, without a web stream. */
  incoming?: Readable,
): Promise<Uint8Array> {
  const declared = req.headers.get('content-length');
  if (declared !== null && !/^\d+$/.test(declared.trim()))
    throw new KeywardError('malformed', 'Content-Length is not a number');
  if (declared !== null && Number(declared) > max) throw tooLarge(what, max);
  if (incoming && !incoming.readableDidRead) return readIncoming(incoming, max, what);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch (err) {
      throw new KeywardError('malformed', 'the client closed the connection before sending the whole body', {
        code: CLIENT_ABORTED,
        cause: err,
      });
    }
    if (step.done) break;
    size += step.value.length;
    if (size > max) {
      // Stop reading; the server discards (or cuts off) the rest.
      void reader.cancel().catch(() => {});
      throw tooLarge(what, max);
    }
    chunks.push(step.value);
  }
  return chunks.length === 1 ? chunks[0]! : new Uint8Array(Buffer.concat(chunks));
}

/**
 * `readBody` straight from node's request stream (a web stream costs several times as much per
 * request). Past the limit the rest is discarded as it arrives rather than the connection cut, so
 * the client still reads the 413; the server's request timeout bounds how long that may take.
 */
function readIncoming(incoming: Readable, max: number, what: string): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (finish: () => void) => {
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onAbort);
      incoming.off('close', onClose);
      finish();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= max) chunks.push(chunk);
      else
        settle(() => {
          incoming.on('error', () => {});
          incoming.resume();
          reject(tooLarge(what, max));
        });
    };
    const onEnd = () => settle(() => resolve(new Uint8Array(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))));
    const onAbort = (err?: unknown) =>
      settle(() =>
        reject(
          new KeywardError('malformed', 'the client closed the connection before sending the whole body', {
            code: CLIENT_ABORTED,
            ...(err !== undefined ? { cause: err } : {}),
          }),
        ),
      );
    const onClose = () => {
      if (!incoming.readableEnded) onAbort();
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onAbort);
    incoming.on('close', onClose);
  });
}

/** The node request a server adapter passes along (`@hono/node-server` puts it in `c.env.incoming`). */
export function nodeIncoming(env: unknown): Readable | undefined {
  const incoming = env !== null && typeof env === 'object' ? (env as { incoming?: unknown }).incoming : undefined;
  return incoming !== null && typeof incoming === 'object' && 'readableDidRead' in incoming
    ? (incoming as Readable)
    : undefined;
}

/** `readBody` as UTF-8 text. */
export async function readBodyText(req: Request, max: number, what?: string, incoming?: Readable): Promise<string> {
  return Buffer.from(await readBody(req, max, what, incoming)).toString('utf8');
}

/** The code of a KeywardError for a body the client abandoned (not ours to log as a failure). */
export const CLIENT_ABORTED = 'clientAborted';

function tooLarge(what: string, max: number): KeywardError {
  return new KeywardError('payloadTooLarge', `${what} is larger than ${max} bytes`);
}
