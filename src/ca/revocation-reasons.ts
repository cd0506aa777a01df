import { KeywardError } from '../core/errors.ts';

/** CRLReason (RFC 5280 5.3.1); 7 is unused. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;

export type RevocationReason = (typeof REVOCATION_REASONS)[keyof typeof REVOCATION_REASONS];

export type ReasonName = keyof typeof REVOCATION_REASONS;

/**
 * Reasons a subscriber or operator may give. CA/AA compromise concern the issuer, not a leaf;
 * certificateHold and removeFromCRL would make revocation reversible, which we don't offer.
 */
export const ALLOWED_REASONS = new Set<number>([0, 1, 3, 4, 5, 9]);

export function reasonCode(name: string): number {
  if (!Object.hasOwn(REVOCATION_REASONS, name)) {
    throw new KeywardError(
      'badRevocationReason',
      `unknown revocation reason "${name}" (one of: ${allowedReasonNames().join(', ')})`,
    );
  }
  const code = REVOCATION_REASONS[name as ReasonName];
  if (!ALLOWED_REASONS.has(code))
    throw new KeywardError(
      'badRevocationReason',
      `revocation reason ${name} is not accepted (one of: ${allowedReasonNames().join(', ')})`,
    );
  return code;
}

export function reasonName(code: number): string {
  return Object.entries(REVOCATION_REASONS).find(([, c]) => c === code)?.[0] ?? String(code);
}

export function allowedReasonNames(): string[] {
  return Object.entries(REVOCATION_REASONS)
    .filter(([, c]) => ALLOWED_REASONS.has(c))
    .map(([n]) => n);
}
