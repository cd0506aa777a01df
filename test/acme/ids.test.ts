import { describe, expect, it } from 'vitest';

import { randomId } from '../../src/acme/ids.ts';

describe('resource ids', () => {
  it('are 128-bit base64url and never begin with a dash, which a command line would read as an option', () => {
    const ids = Array.from({ length: 20_000 }, () => randomId());
    expect(ids.filter((id) => id.startsWith('-'))).toEqual([]);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids.slice(0, 100)) expect(id).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
  });
});
