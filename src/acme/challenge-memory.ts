import { ExpiringMap } from '../core/expiring-map.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import type { ChallengeKind } from '../validation/index.ts';
import type { AuthzRow } from './views.ts';

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

/** A pending authorization as served: who may validate it, what, and each challenge's token. */
interface PendingAuthz {
  accountId: string;
  identifier: AcmeIdentifier;
  wildcard: boolean;
  tokens: ReadonlyMap<ChallengeKind, string>;
}

/**
 * Pending authorizations this replica served, so that a POST to one of their challenges can start
 * the check at once (a client reads the authorization, then POSTs one of its challenges) and
 * record only the outcome: one statement instead of a start and a settle. Accounts found over
 * their failed-validations limit are remembered for a minute, so their POSTs start no check here.
 */
export class ChallengeMemory {
  private readonly pending = new ExpiringMap<string, PendingAuthz>(8_192, 10 * 60_000);
  private readonly limited = new ExpiringMap<string, true>(1_024, 60_000);

  rememberPending(authz: AuthzRow): void {
    // One attempt per authorization: once one is under way, none of its challenges starts here.
    if (authz.status !== 'pending' || authz.attempted !== null) return;
    this.pending.set(authz.id, {
      accountId: authz.account_id,
      identifier: {
        type: authz.identifier_type,
        value: authz.wildcard ? `*.${authz.identifier_value}` : authz.identifier_value,
      },
      wildcard: authz.wildcard,
      tokens: new Map(authz.challenge_types.map((type, i) => [type, authz.challenge_tokens[i]!])),
    });
  }

  knownFor(authzId: string, kind: ChallengeKind, accountId: string): ChallengeFacts | undefined {
    const p = this.pending.get(authzId);
    const token = p?.tokens.get(kind);
    if (!p || token === undefined || p.accountId !== accountId || this.limited.get(accountId)) return undefined;
    return { authzId, accountId, kind, token, identifier: p.identifier, wildcard: p.wildcard };
  }

  /** An authorization whose challenge was attempted needs no check: a later POST just reads it. */
  forget(authzId: string): void {
    this.pending.delete(authzId);
  }

  overLimit(accountId: string): void {
    this.limited.set(accountId, true);
  }
}
