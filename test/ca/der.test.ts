import { describe, expect, it } from 'vitest';

import { decodeOid, decodeTime, encodeTime, oid, readTlv, readWhole, tlv, valueOf } from '../../src/ca/der.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('DER helpers', () => {
  it.each([0, 1, 127, 128, 255, 256, 65535, 65536])('length %i round-trips', (n) => {
    const der = tlv(0x04, new Uint8Array(n));
    const t = readWhole(der, 0x04);
    expect(t.end - t.valueStart).toBe(n);
  });

  it.each(['1.2.840.10045.3.1.7', '2.5.29.17', '2.25.329800735698586629295641978511506172918', '2.999.3'])(
    'OID %s round-trips',
    (o) => {
      const d = oid(o);
      expect(decodeOid(valueOf(d, readWhole(d)))).toBe(o);
    },
  );

  it.each([
    ['indefinite length', '3080', /indefinite/],
    ['non-minimal long form', '048101' + '00', /non-minimal/],
    ['leading zero length', '04820001' + '00', /non-minimal/],
    ['truncated', '0405' + '0000', /truncated/],
  ])('rejects %s', (_, h, message) => {
    expect(() => readTlv(Buffer.from(h, 'hex'), 0)).toThrow(message);
  });

  it('uses UTCTime through 2049 and GeneralizedTime from 2050, whole seconds', () => {
    const a = encodeTime(new Date('2049-12-31T23:59:59.999Z'));
    expect(hex(a)).toBe('170d' + Buffer.from('491231235959Z').toString('hex'));
    const b = encodeTime(new Date('2050-01-01T00:00:00Z'));
    expect(hex(b)).toBe('180f' + Buffer.from('20500101000000Z').toString('hex'));
    expect(decodeTime(a, readWhole(a)).toISOString()).toBe('2049-12-31T23:59:59.000Z');
    expect(decodeTime(b, readWhole(b)).toISOString()).toBe('2050-01-01T00:00:00.000Z');
  });
});
