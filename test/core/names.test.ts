import { describe, expect, it } from 'vitest';

import { dnsNameProblem, isDnsName } from '../../src/core/dns-name.ts';
import { canonicalIp, formatIp, parseIp } from '../../src/core/ip.ts';
import { normalizeSerial, serialFromBytes } from '../../src/core/serial.ts';

describe('the one DNS-name rule', () => {
  it.each([
    'example.com',
    'a-b.c1.example',
    'xn--bcher-kva.example', // bücher
    'a.xn--p1ai', // .рф
    `${'a'.repeat(63)}.example`,
  ])('accepts the host name %s', (name) => {
    expect(dnsNameProblem(name)).toBeUndefined();
  });

  it.each([
    ['a.123', /all-numeric/],
    ['10.0.0.1', /all-numeric/],
    ['Example.com', /lower case/],
    ['example.com.', /must not end with a dot/],
    ['ex_ample.com', /letters, digits and inner hyphens/],
    ['-a.example', /letters, digits and inner hyphens/],
    ['a-.example', /letters, digits and inner hyphens/],
    ['a..example', /empty label/],
    [`${'a'.repeat(64)}.example`, /longer than 63/],
    [`${'a.'.repeat(126)}example`, /longer than 253/],
    ['ab--c.example', /IDNA A-label/],
    ['xn--zz.example', /IDNA A-label/],
    ['xn--ls8h.example', /IDNA A-label/], // an emoji: DISALLOWED by RFC 5892
    ['bücher.example', /letters, digits and inner hyphens/],
    ['localhost', /at least two labels/],
    ['*.example.com', /wildcard/],
  ])('refuses %s', (name, why) => {
    expect(dnsNameProblem(name)).toMatch(why);
  });

  it('takes wildcards and single labels only where the caller allows them', () => {
    expect(isDnsName('*.example.com', { wildcard: true })).toBe(true);
    expect(dnsNameProblem('*.com', { wildcard: true })).toMatch(/two labels below the wildcard/);
    expect(dnsNameProblem('a.*.example', { wildcard: true })).toMatch(/whole leftmost label/);
    expect(dnsNameProblem('*a.example', { wildcard: true })).toMatch(/whole leftmost label/);
    expect(isDnsName('keyward', { singleLabel: true })).toBe(true);
    expect(isDnsName('123', { singleLabel: true })).toBe(false);
  });
});

describe('the one IP-address rule', () => {
  it('reads literals to octets and writes one canonical form', () => {
    expect(canonicalIp('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalIp('::ffff:192.0.2.1')).toBe('::ffff:c000:201');
    expect(canonicalIp('192.0.2.1')).toBe('192.0.2.1');
    expect(formatIp(parseIp('fe80:0:0:1:0:0:0:1')!)).toBe('fe80:0:0:1::1');
    for (const bad of ['1.2.3', '01.2.3.4', 'fe80::1%eth0', '10.0.0.0/8', 'example.com', ''])
      expect(canonicalIp(bad), bad).toBeNull();
  });
});

describe('serial numbers', () => {
  it('have one database form whatever their spelling', () => {
    expect(normalizeSerial('0x00AB:CD')).toBe('abcd');
    expect(normalizeSerial('  0001f ')).toBe('1f');
    expect(normalizeSerial('0')).toBe('0');
    expect(serialFromBytes(Uint8Array.of(0, 0x80, 1))).toBe('8001');
    expect(() => normalizeSerial('xyz')).toThrow(expect.objectContaining({ kind: 'malformed' }));
    expect(() => normalizeSerial('1'.repeat(41))).toThrow(expect.objectContaining({ kind: 'malformed' }));
  });
});
