/**
 * The key hierarchy signs ECDSA as DER `Ecdsa-Sig-Value`; JWS (RFC 7518 3.4) wants the raw
 * r‖s of fixed width. Converting here keeps kms/ free of token formats.
 */
export function derToP1363(der: Uint8Array, size: number): Uint8Array {
  let i = 0;
  const fail = (): never => {
    throw new Error('not a DER ECDSA signature');
  };
  const len = (): number => {
    let n = der[i++] ?? fail();
    if (n & 0x80) {
      const bytes = n & 0x7f;
      if (bytes < 1 || bytes > 2) fail();
      n = 0;
      for (let k = 0; k < bytes; k++) n = (n << 8) | (der[i++] ?? fail());
    }
    return n;
  };
  if (der[i++] !== 0x30) fail();
  if (len() !== der.length - i) fail();
  const out = new Uint8Array(size * 2);
  for (const half of [0, 1]) {
    if (der[i++] !== 0x02) fail();
    const n = len();
    let int = der.subarray(i, i + n);
    i += n;
    while (int.length > size && int[0] === 0) int = int.subarray(1);
    if (int.length > size || int.length === 0) fail();
    out.set(int, half * size + size - int.length);
  }
  if (i !== der.length) fail();
  return out;
}
