import { ExpiringMap } from '../core/expiring-map.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import type { ChallengeKind } from '../validation/index.ts';
import type { AuthzRow } from './views.ts';

/** What a check needs to know about a challenge: none of it ever changes. */
export interface ChallengeFacts {
  authzId: string;
  accountId: string;
  kind: ChallengeKind;
  token: string;
  /** As validated: `*.` in front for a wildcard authorization. */
  identifier: AcmeIdentifier;
  wildcard: boolean;
}

/**
 * The facts for checking `kind` of an authorization read with the challenge POST's nonce, when a
 * check may start: the authorization is the account's, pending, nothing attempted yet, and it
 * offers that type. Any replica can so start the check at once and record only the outcome.
 */
export function startableFacts(
  authz: AuthzRow | undefined,
  kind: ChallengeKind,
  accountId: string,
  now: Date,
): ChallengeFacts | undefined {
  if (!authz || authz.account_id !== accountId || authz.status !== 'pending' || authz.attempted !== null) return;
  if (authz.expires <= now) return;
  const i = authz.challenge_types.indexOf(kind);
  if (i < 0) return;
  return {
    authzId: authz.id,
    accountId,
    kind,
    token: authz.challenge_tokens[i]!,
    identifier: {
      type: authz.identifier_type,
      value: authz.wildcard ? `*.${authz.identifier_value}` : authz.identifier_value,
    },
    wildcard: authz.wildcard,
  };
}

/**
 * Accounts found over their failed-validations limit, remembered for a minute so their challenge
 * POSTs start no check at once (the statement that records an outcome refuses them anyway).
 */
export class LimitedAccounts {
  private readonly limited = new ExpiringMap<string, true>(1_024, 60_000);

  add(accountId: string): void {
    this.limited.set(accountId, true);
  }

  has(accountId: string): boolean {
    return this.limited.get(accountId) === true;
  }
}
