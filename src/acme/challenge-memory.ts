import { ExpiringMap } from '../core/expiring-map.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import type { ChallengeKind } from '../validation/index.ts';
import type { AuthzRow, ChallengeRow } from './views.ts';

/** What this replica saw of a challenge when it served the authorization: none of it ever changes. */
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
 * Challenges whose authorization this replica served, so that their POST can start the check at
 * once (a client reads the authorization, then POSTs one of its challenges) and record only the
 * outcome: one statement instead of a start and a settle. Accounts found over their
 * failed-validations limit are remembered for a minute, so their POSTs start no check here.
 */
export class ChallengeMemory {
  private readonly facts = new ExpiringMap<string, ChallengeFacts>(8_192, 10 * 60_000);
  private readonly limited = new ExpiringMap<string, true>(1_024, 60_000);

  rememberPending(authz: AuthzRow, challenges: readonly ChallengeRow[]): void {
    if (authz.status !== 'pending') return;
    const value = authz.wildcard ? `*.${authz.identifier_value}` : authz.identifier_value;
    for (const ch of challenges)
      if (ch.status === 'pending')
        this.facts.set(ch.id, {
          authzId: authz.id,
          accountId: authz.account_id,
          kind: ch.type,
          token: ch.token,
          identifier: { type: authz.identifier_type, value },
          wildcard: authz.wildcard,
        });
  }

  knownFor(challengeId: string, accountId: string): ChallengeFacts | undefined {
    const f = this.facts.get(challengeId);
    return f?.accountId === accountId && !this.limited.get(accountId) ? f : undefined;
  }

  /** A challenge no longer pending needs no check: a later POST just reads it. */
  forget(challengeId: string): void {
    this.facts.delete(challengeId);
  }

  overLimit(accountId: string): void {
    this.limited.set(accountId, true);
  }
}
