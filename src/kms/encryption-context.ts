import { KmsError } from './errors.ts';

export type EncryptionContext = Readonly<Record<string, string>>;

const MAX_PART = 256;
const MAX_TOTAL = 4096;

/**
 * Canonical bytes of an encryption context: u16 count, then (u16 klen, key, u16 vlen, value) pairs
 * sorted by the key's UTF-8 bytes. Byte-exact so that the AAD never depends on object key order.
 */
export function encodeContext(context: EncryptionContext): Buffer {
  const pairs = Object.entries(context).map(([k, v]) => [Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')] as const);
  pairs.sort((a, b) => Buffer.compare(a[0], b[0]));
  const parts: Buffer[] = [u16(pairs.length)];
  for (const [k, v] of pairs) {
    if (k.length === 0 || k.length > MAX_PART || v.length > MAX_PART) {
      throw new KmsError('InvalidInput', 'encryption context keys must be 1-256 bytes and values at most 256 bytes');
    }
    parts.push(u16(k.length), k, u16(v.length), v);
  }
  const encoded = Buffer.concat(parts);
  if (encoded.length > MAX_TOTAL) throw new KmsError('InvalidInput', 'encryption context is larger than 4 KiB');
  return encoded;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
