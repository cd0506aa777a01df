import { KeywardError, type Subproblem } from '../core/errors.ts';
import { checkCaa, type DnsResolver } from '../validation/index.ts';
import type { ProofOfControl, Requester } from './request.ts';

export interface CaaFreshnessSettings {
  /** validation.caa: CAA is checked at all. */
  enabled: boolean;
  /** acme.caaRecheckAfter: a proof older than this is checked again before signing. */
  maxAgeMs: number;
  /** acme.caaIdentities: the issuer domain names that mean this CA. */
  identities: string[];
  /** Made on first use, so commands that never issue for ACME open no resolver. */
  resolver(): DnsResolver;
}

/**
 * CAA must have been checked shortly before issuance (the Baseline Requirements say within 8
 * hours), but a reused or long-pending authorization may have been validated a day ago. Every
 * name proven longer than `maxAgeMs` ago is checked again, as Boulder does. ACME only: the other
 * front ends prove control otherwise (a token or a certificate the operator issued), and CAA
 * speaks to public CAs about names on the public DNS.
 */
export async function checkCaaFreshness(
  settings: CaaFreshnessSettings,
  requester: Requester,
  proofs: readonly ProofOfControl[] | undefined,
  now: Date,
): Promise<void> {
  if (requester.kind !== 'acme' || !settings.enabled) return;
  if (!proofs) throw new Error('an ACME request reached the decision without its proofs of control');
  const cutoff = now.getTime() - settings.maxAgeMs;
  const stale = proofs.filter((p) => p.validatedAt.getTime() <= cutoff);
  const failures: Subproblem[] = [];
  for (const proof of stale) {
    const wildcard = proof.identifier.value.startsWith('*.');
    const outcome = await checkCaa(
      proof.identifier,
      { caIdentities: settings.identities, accountUri: requester.accountUri, method: proof.method, wildcard },
      settings.resolver(),
    );
    if (!outcome.ok)
      failures.push({
        kind: outcome.problem.type,
        detail: outcome.problem.detail,
        identifier: {
          type: proof.identifier.type,
          value: wildcard ? proof.identifier.value.slice(2) : proof.identifier.value,
        },
      });
  }
  if (failures.length === 0) return;
  throw new KeywardError(
    'caa',
    `CAA re-checked at finalize forbids issuance: ${failures.map((f) => f.detail).join('; ')}`,
    { subproblems: failures },
  );
}
