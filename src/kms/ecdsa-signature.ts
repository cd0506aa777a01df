import { KmsError } from './errors.ts';

// PKCS#11 (CKM_ECDSA) and WebCrypto give an ECDSA signature as r‖s, each as wide as the curve's
// order; X.509, CRLs and OCSP carry the DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER }
// (RFC 3279 §2.2.3). These two functions convert between them.

function derInteger(bytes: Uint8Array): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const body = Buffer.from(bytes.subarray(i));
  // A set high bit would make the INTEGER negative: prefix a zero byte.
  const content = body[0]! & 0x80 ? Buffer.concat([Buffer.of(0), body]) : body;
  return Buffer.concat([Buffer.of(0x02, content.length), content]);
}

/** r‖s (both halves the same width) → DER Ecdsa-Sig-Value. */
export function rawToDer(raw: Uint8Array): Uint8Array {
  if (raw.length === 0 || raw.length % 2 !== 0 || raw.length > 132)
    throw new KmsError('InvalidInput', `an r‖s ECDSA signature of ${raw.length} bytes is not valid`);
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  // At most 2 × (2 + 67) bytes for P-521, so the short and one-byte long forms suffice.
  const len = body.length < 0x80 ? Buffer.of(body.length) : Buffer.of(0x81, body.length);
  return new Uint8Array(Buffer.concat([Buffer.of(0x30), len, body]));
}

/** DER Ecdsa-Sig-Value → r‖s, each half `width` bytes (32 for P-256, 48 for P-384). */
export function derToRaw(der: Uint8Array, width: number): Uint8Array {
  const b = Buffer.from(der);
  const bad = () => new KmsError('InvalidInput', 'not a DER ECDSA signature');
  let pos = 0;
  if (b[pos++] !== 0x30) throw bad();
  let len = b[pos++] ?? 0;
  if (len === 0x81) len = b[pos++] ?? 0;
  else if (len > 0x80) throw bad();
  if (pos + len !== b.length) throw bad();
  const out = Buffer.alloc(width * 2);
  for (let i = 0; i < 2; i++) {
    if (b[pos++] !== 0x02) throw bad();
    const n = b[pos++] ?? 0;
    let int = b.subarray(pos, pos + n);
    pos += n;
    if (int.length !== n) throw bad();
    while (int.length > 1 && int[0] === 0) int = int.subarray(1);
    if (int.length > width) throw bad();
    int.copy(out, i * width + (width - int.length));
  }
  if (pos !== b.length) throw bad();
  return new Uint8Array(out);
}
