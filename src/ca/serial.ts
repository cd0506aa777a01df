import { randomBytesPooled } from '../core/random.ts';

/**
 * A random positive 128-bit serial as 32 hex digits: the top bit is cleared so the DER INTEGER needs
 * no padding, and the top nibble is non-zero so the hex form has no leading zero to normalise.
 */
export function randomSerial(): string {
  const bytes = randomBytesPooled(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return bytes.toString('hex');
}
