import { createHash } from 'node:crypto';

import { MAX_OCSP_REQUEST_BYTES } from '../ca/ocsp.ts';
import type { CachedOcspAnswer, OcspResponder } from '../ca/ocsp-responder.ts';
import { events } from '../core/events.ts';
import type { FastPath, ServedFast } from '../core/feature.ts';

/**
 * OCSP over GET (RFC 5019 5): the request, url-encoded base64 DER, is the path after `/ocsp/`.
 * The HTTP routes (revocation.ts) and the fast path below share the decoding and the headers, so
 * the two give the same answer byte for byte, with the same headers.
 */

const PREFIX = '/ocsp/';

/** Longest path tail read: base64 of the largest request, every character percent-encoded. */
export const MAX_GET_CHARS = Math.ceil((MAX_OCSP_REQUEST_BYTES * 4) / 3) * 3;

/** Non-empty padded base64 (its length, a multiple of 4, is checked apart). */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The request's DER, or undefined if it is not url-encoded base64. Some clients leave '+'
 * unencoded, which a form decoder would turn into a space; plain percent-decoding keeps it.
 */
export function decodeGetRequest(encoded: string): Uint8Array | undefined {
  let text: string;
  try {
    text = decodeURIComponent(encoded);
  } catch {
    return undefined;
  }
  text = text.replace(/ /g, '+');
  if (text.length % 4 !== 0 || !BASE64.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/** What an answer from memory sends besides its max-age: worked out once per answer. */
interface Wire {
  etag: string;
  lastModified: string;
  expires: string;
  nextUpdateMs: number;
  length: string;
}

const wires = new WeakMap<Uint8Array, Wire>();

function wireOf(answer: Pick<CachedOcspAnswer, 'der' | 'thisUpdate' | 'nextUpdate'>): Wire {
  // Keyed by the answer's bytes: answers served from memory are the same object on every hit.
  let wire = wires.get(answer.der);
  if (wire === undefined) {
    wire = {
      etag: `"${createHash('sha256').update(answer.der).digest('hex').slice(0, 32)}"`,
      lastModified: answer.thisUpdate.toUTCString(),
      expires: answer.nextUpdate.toUTCString(),
      nextUpdateMs: answer.nextUpdate.getTime(),
      length: String(answer.der.byteLength),
    };
    wires.set(answer.der, wire);
  }
  return wire;
}

function cacheControl(wire: Wire, now: number): string {
  const maxAge = Math.max(0, Math.floor((wire.nextUpdateMs - now) / 1000));
  return `max-age=${maxAge}, public, no-transform, must-revalidate`;
}

/**
 * RFC 5019 6.2 caching headers of an answer that is not bound to a nonce: cacheable by anyone
 * until nextUpdate, validated by its ETag.
 */
export function answerHeaders(answer: Pick<CachedOcspAnswer, 'der' | 'thisUpdate' | 'nextUpdate'>): {
  etag: string;
  'last-modified': string;
  expires: string;
  'cache-control': string;
} {
  const wire = wireOf(answer);
  return {
    etag: wire.etag,
    'last-modified': wire.lastModified,
    expires: wire.expires,
    'cache-control': cacheControl(wire, Date.now()),
  };
}

/**
 * Tails served by the fast path: base64 with '+', '/' and '=' as they are or percent-encoded.
 * For these the app's router and request log see the same path as the raw request line, and
 * `decodeGetRequest` reads the same bytes as `plainRequest`; anything else (other escapes, dot
 * segments, a query) is left to the app.
 */
const ESCAPED_TAIL = /^(?:[A-Za-z0-9+/=]|%2[BbFf]|%3[Dd])+$/;

function plainRequest(tail: string): Buffer | undefined {
  let text = tail;
  if (tail.includes('%')) {
    if (!ESCAPED_TAIL.test(tail)) return undefined;
    // Only %2B, %2F and %3D are left: decoding them cannot fail.
    text = decodeURIComponent(tail);
  }
  if (text.length % 4 !== 0 || !BASE64.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/** A Host the app accepts as it is (name or IPv4, optional port), so the fast path refuses none. */
const PLAIN_HOST = /^[A-Za-z0-9._-]+(?::(?:\d{1,4}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d\d|655[0-2]\d|6553[0-5]))?$/;

const CACHE_SOURCE = { source: 'cache' } as const;

/**
 * GET /ocsp/<base64> answered from the responder's memory before routing: an answer pre-signed
 * and kept for exactly these request bytes (ocsp-responder.ts `fromMemory`). Everything else — a
 * conditional request (If-None-Match), HEAD, POST, a request not in memory, a malformed or
 * oversized one — goes on to the app's routes, which answer it as always.
 */
export function ocspGetFastPath(responder: OcspResponder, served: ServedFast): FastPath {
  return (req, res) => {
    const url = req.url;
    if (req.method !== 'GET' || url === undefined || !url.startsWith(PREFIX)) return false;
    const started = performance.now();
    const tail = url.slice(PREFIX.length);
    if (tail.length > MAX_GET_CHARS || req.headers['if-none-match'] !== undefined) return false;
    const host = req.headers.host;
    if (host === undefined || !PLAIN_HOST.test(host)) return false;
    const der = plainRequest(tail);
    if (der === undefined) return false;
    const answer = responder.fromMemory(der);
    if (answer === undefined) return false;
    const wire = wireOf(answer);
    res.writeHead(200, [
      'content-type',
      'application/ocsp-response',
      'etag',
      wire.etag,
      'last-modified',
      wire.lastModified,
      'expires',
      wire.expires,
      'cache-control',
      cacheControl(wire, Date.now()),
      'content-length',
      wire.length,
    ]);
    res.end(answer.der);
    events.ocspAnswered.publish(CACHE_SOURCE);
    served(url, started);
    return true;
  };
}
