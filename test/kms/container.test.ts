import { createSecretKey, randomBytes, randomUUID } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { open, parseHeader, PURPOSE, seal } from '../../src/kms/container.ts';
import { encodeContext } from '../../src/kms/encryption-context.ts';

describe('KWE1 container', () => {
  const key = createSecretKey(randomBytes(32));
  const keyId = randomUUID();
  const ctx = { 'kw:purpose': 'dek', 'kw:key': 'k1', 'kw:usage': 'intermediate' };
  const secret = randomBytes(32);
  const blob = seal(key, { purpose: PURPOSE.dek, keyId, version: 3 }, ctx, secret);

  it('round-trips and names its wrapping key and version in a 118-byte wrapped DEK', () => {
    expect(blob.length).toBe(118);
    expect(parseHeader(blob)).toMatchObject({ purpose: PURPOSE.dek, keyId, version: 3 });
    expect(open(key, blob, { purpose: PURPOSE.dek, keyId, version: 3 }, ctx).equals(secret)).toBe(true);
  });

  it('binds the context regardless of key order, and refuses any other context', () => {
    const reordered = { 'kw:usage': 'intermediate', 'kw:key': 'k1', 'kw:purpose': 'dek' };
    expect(open(key, blob, { purpose: PURPOSE.dek }, reordered).equals(secret)).toBe(true);
    expect(() => open(key, blob, { purpose: PURPOSE.dek }, { ...ctx, 'kw:key': 'k2' })).toThrow(
      /failed authentication/,
    );
    expect(encodeContext(ctx).equals(encodeContext(reordered))).toBe(true);
  });

  it('refuses a relabelled header, a flipped bit, a truncated tag, a wrong key or purpose', () => {
    const relabelled = Buffer.from(blob);
    relabelled.writeUInt32BE(4, 22);
    expect(() => open(key, relabelled, { purpose: PURPOSE.dek }, ctx)).toThrow(/v4 failed authentication/);
    const flipped = Buffer.from(blob);
    flipped[80] = flipped[80]! ^ 1;
    expect(() => open(key, flipped, { purpose: PURPOSE.dek }, ctx)).toThrow(/failed authentication/);
    expect(() => open(key, blob.subarray(0, blob.length - 4), { purpose: PURPOSE.dek }, ctx)).toThrow(
      /failed authentication|truncated/,
    );
    expect(() => open(createSecretKey(randomBytes(32)), blob, { purpose: PURPOSE.dek }, ctx)).toThrow(
      /failed authentication/,
    );
    expect(() => open(key, blob, { purpose: PURPOSE.privateKey }, ctx)).toThrow(/purpose 2 is not the expected 3/);
    expect(() => open(key, blob, { purpose: PURPOSE.dek, keyId: randomUUID() }, ctx)).toThrow(/wrapped by/);
    expect(() => open(key, Buffer.from('KWE2' + 'x'.repeat(100)), { purpose: PURPOSE.dek }, ctx)).toThrow(
      /not a KWE1 ciphertext/,
    );
  });

  it('never reuses a subkey: two seals of the same plaintext differ', () => {
    const again = seal(key, { purpose: PURPOSE.dek, keyId, version: 3 }, ctx, secret);
    expect(again.equals(blob)).toBe(false);
  });
});
