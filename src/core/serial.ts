import { KeywardError } from './errors.ts';

/**
 * Certificate serial numbers in the one form the database keys them by: lower-case hex without
 * leading zeros. RFC 5280 §4.1.2.2 allows up to 20 octets.
 */
export function normalizeSerial(text: string): string {
  const hex = text.trim().replace(/^0x/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{1,40}$/.test(hex))
    throw new KeywardError('malformed', `"${text}" is not a hexadecimal serial number`);
  return stripZeros(hex);
}

/** The serial of a DER INTEGER's content octets (or any big-endian bytes). */
export function serialFromBytes(bytes: Uint8Array): string {
  return stripZeros(Buffer.from(bytes).toString('hex'));
}

function stripZeros(hex: string): string {
  return hex.replace(/^0+(?=.)/, '');
}
