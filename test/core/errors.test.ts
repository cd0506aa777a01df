import { describe, expect, it } from 'vitest';

import { ERROR_KINDS, EXIT, KeywardError, kindSpec, problemDocument, refusalOf } from '../../src/core/errors.ts';
import { KmsError } from '../../src/kms/errors.ts';

describe('the error model', () => {
  it('gives every kind one ACME type, one HTTP status and one exit status', () => {
    for (const kind of ERROR_KINDS) {
      const { acme, status, exit } = kindSpec(kind);
      expect(acme, kind).toMatch(/^[a-zA-Z]+$/);
      expect(status, kind).toBeGreaterThanOrEqual(400);
      expect(Object.values(EXIT), kind).toContain(exit);
    }
    expect(kindSpec('rateLimited')).toEqual({ acme: 'rateLimited', status: 429, exit: EXIT.tryLater });
    expect(kindSpec('notFound')).toEqual({ acme: 'malformed', status: 404, exit: EXIT.notFound });
    expect(kindSpec('usage').exit).toBe(EXIT.usage);
  });

  it('renders a problem document with subproblems, and keeps internal details on the server', () => {
    const refusal = refusalOf(
      [
        { kind: 'rejectedIdentifier', detail: 'no', identifier: { type: 'dns', value: 'a.example' } },
        { kind: 'malformed', detail: 'bad', identifier: { type: 'dns', value: 'b..example' } },
      ],
      'Cannot issue',
    );
    expect(refusal.kind).toBe('compound');
    expect(problemDocument(refusal)).toEqual({
      type: 'urn:ietf:params:acme:error:compound',
      detail: 'Cannot issue: no; bad',
      status: 400,
      subproblems: [
        {
          type: 'urn:ietf:params:acme:error:rejectedIdentifier',
          detail: 'no',
          identifier: { type: 'dns', value: 'a.example' },
        },
        {
          type: 'urn:ietf:params:acme:error:malformed',
          detail: 'bad',
          identifier: { type: 'dns', value: 'b..example' },
        },
      ],
    });
    const internal = problemDocument(new KeywardError('internal', 'relation "certificates" does not exist'));
    expect(internal).toEqual({
      type: 'urn:ietf:params:acme:error:serverInternal',
      detail: 'The server could not process the request',
      status: 500,
      code: 'internal',
    });
    expect(problemDocument(new KeywardError('notFound', 'No such order'))).toMatchObject({
      type: 'urn:ietf:params:acme:error:malformed',
      status: 404,
      code: 'notFound',
    });
  });

  it('crosses the admin socket as JSON and comes back the same', () => {
    const sent = new KeywardError('rateLimited', 'slow down', {
      retryAfter: 30,
      subproblems: [{ kind: 'rateLimited', detail: 'x', identifier: { type: 'dns', value: 'a.example' } }],
    });
    const back = KeywardError.fromJSON(JSON.parse(JSON.stringify(sent.toJSON())));
    expect(back).toMatchObject({ kind: 'rateLimited', code: 'rateLimited', message: 'slow down', retryAfter: 30 });
    expect(back.subproblems).toEqual(sent.subproblems);
    expect(KeywardError.fromJSON({ kind: 'no-such-kind', detail: 'x' }).kind).toBe('internal');
    const kms = KeywardError.fromJSON(new KmsError('KeyDisabled', 'key k is Disabled').toJSON());
    expect([kms.kind, kms.code, kms.status]).toEqual(['conflict', 'KeyDisabled', 409]);
  });
});
