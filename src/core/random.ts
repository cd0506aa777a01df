import { randomFillSync } from 'node:crypto';

// crypto.randomBytes(16) costs ~8 µs a call here (a new buffer and a trip into OpenSSL each time),
// and an ACME certificate asks for about ten such values (nonces, ids, tokens, its serial). Drawn
// from a block the same CSPRNG filled, a value costs one copy. Every byte is handed out once and
// zeroed in the block when it is.
const BLOCK_BYTES = 4096;
let block = Buffer.alloc(0);
let offset = 0;

/** `n` bytes from the CSPRNG, like `crypto.randomBytes(n)`, cheap for the small values hot paths need. */
export function randomBytesPooled(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`randomBytesPooled: ${n} is not a byte count`);
  if (n > BLOCK_BYTES / 8) return randomFillSync(Buffer.alloc(n));
  if (offset + n > block.length) {
    block = randomFillSync(Buffer.alloc(BLOCK_BYTES));
    offset = 0;
  }
  const out = Buffer.from(block.subarray(offset, offset + n));
  block.fill(0, offset, offset + n);
  offset += n;
  return out;
}
