import { describe, expect, it } from 'vitest';

import { randomBytesPooled } from '../../src/core/random.ts';

describe('randomBytesPooled', () => {
  it('hands out values of the asked length that never repeat, across many refills of its block', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 5_000; i++) {
      const value = randomBytesPooled(16);
      expect(value.length).toBe(16);
      seen.add(value.toString('hex'));
    }
    expect(seen.size).toBe(5_000);
  });

  it('gives each caller its own bytes: changing one value changes no other', () => {
    const a = randomBytesPooled(32);
    const b = randomBytesPooled(32);
    const before = Buffer.from(b);
    a.fill(0);
    expect(b.equals(before)).toBe(true);
  });

  it('serves odd and large sizes, and refuses what is not a byte count', () => {
    expect(randomBytesPooled(0).length).toBe(0);
    expect(randomBytesPooled(7).length).toBe(7);
    const large = randomBytesPooled(10_000);
    expect(large.length).toBe(10_000);
    expect(large.some((byte) => byte !== 0)).toBe(true);
    expect(() => randomBytesPooled(-1)).toThrow(RangeError);
    expect(() => randomBytesPooled(1.5)).toThrow(RangeError);
  });
});
