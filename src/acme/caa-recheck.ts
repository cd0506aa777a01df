import { addMs } from '../core/clock.ts';
import { KeywardError, type Subproblem } from '../core/errors.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { type ChallengeKind, checkCaa } from '../validation/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';

/**
 * CAA must have been checked shortly before issuance (the Baseline Requirements say within 8 hours),
 * but a reused or long-pending authorization may have been validated a day ago. At finalize, every
 * identifier validated longer than `acme.caaRecheckAfter` ago is checked again, as Boulder does.
 * `oldestValidation` comes with the order, so a fresh order costs no extra query.
 */
export async function recheckCaa(
  deps: AcmeDeps,
  account: AccountRow,
  orderId: string,
  oldestValidation: Date | null,
  now: Date,
): Promise<void> {
  if (!deps.config.validation.caa || oldestValidation === null) return;
  const cutoff = addMs(now, -deps.config.acme.caaRecheckAfter);
  if (oldestValidation > cutoff) return;
  const stale = await deps.db
    .selectFrom('acme_order_authzs as oa')
    .innerJoin('acme_authzs as a', 'a.id', 'oa.authz_id')
    .innerJoin('acme_challenges as ch', (j) => j.onRef('ch.authz_id', '=', 'a.id').on('ch.status', '=', 'valid'))
    .select(['a.identifier_type', 'a.identifier_value', 'a.wildcard', 'ch.type'])
    .where('oa.order_id', '=', orderId)
    .where('a.validated_at', '<=', cutoff)
    .execute();
  const failures: Subproblem[] = [];
  for (const row of stale) {
    const id: AcmeIdentifier = {
      type: row.identifier_type,
      value: row.wildcard ? `*.${row.identifier_value}` : row.identifier_value,
    };
    const outcome = await checkCaa(
      id,
      {
        caIdentities: deps.config.acme.caaIdentities,
        accountUri: deps.urls.account(account.id),
        method: row.type as ChallengeKind,
        wildcard: row.wildcard,
      },
      deps.resolver,
    );
    if (!outcome.ok)
      failures.push({
        kind: outcome.problem.type,
        detail: outcome.problem.detail,
        identifier: { type: row.identifier_type, value: row.identifier_value },
      });
  }
  if (failures.length === 0) return;
  throw new KeywardError(
    'caa',
    `CAA re-checked at finalize forbids issuance: ${failures.map((f) => f.detail).join('; ')}`,
    { subproblems: failures },
  );
}
