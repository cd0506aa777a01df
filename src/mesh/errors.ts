import type { NameDecision } from '../policy/names.ts';

/** ACME-style problem types the mesh endpoints answer with (urn:ietf:params:acme:error:<type>). */
export type MeshProblemType =
  'malformed' | 'unauthorized' | 'badCSR' | 'badPublicKey' | 'rejectedIdentifier' | 'invalidProfile' | 'serverInternal';

export interface MeshSubproblem {
  type: string;
  detail: string;
  identifier: { type: string; value: string };
}

/** A refusal of a mesh request; the HTTP layer renders it as application/problem+json. */
export class MeshError extends Error {
  override name = 'MeshError';
  constructor(
    readonly type: MeshProblemType,
    readonly status: number,
    message: string,
    readonly subproblems: MeshSubproblem[] = [],
  ) {
    super(message);
  }
}

export function policyRefusal(decisions: readonly NameDecision[]): MeshError {
  const refused = decisions.filter((d): d is Extract<NameDecision, { allowed: false }> => !d.allowed);
  return new MeshError(
    'rejectedIdentifier',
    403,
    `the name policy refuses ${refused.length === 1 ? 'an identifier' : `${refused.length} identifiers`}: ${refused.map((d) => d.reason).join('; ')}`,
    refused.map((d) => ({
      type: 'urn:ietf:params:acme:error:rejectedIdentifier',
      detail: d.reason,
      identifier: d.identifier,
    })),
  );
}
