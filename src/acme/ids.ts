import { randomBytesPooled } from '../core/random.ts';

/**
 * Unguessable resource ids and tokens: 128 bits, base64url without padding (RFC 8555 §8.3, §10.5).
 * Never starting with "-": operators type account and order ids on the command line, where a
 * leading dash reads as an option.
 */
export function randomId(bytes = 16): string {
  for (;;) {
    const id = randomBytesPooled(bytes).toString('base64url');
    if (id[0] !== '-') return id;
  }
}

export const B64URL = /^[A-Za-z0-9_-]*$/;

/** Strict base64url: padding or other alphabets are refused (RFC 8555 §6.1). */
export function decodeB64url(text: string): Buffer | null {
  if (!B64URL.test(text) || text.length % 4 === 1) return null;
  return Buffer.from(text, 'base64url');
}
