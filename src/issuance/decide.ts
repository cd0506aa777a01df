import { normalizeSans } from '../ca/names.ts';
import { checkAgainstProfile } from '../ca/profile-check.ts';
import { isPassiveRevocation } from '../ca/revocation-urls.ts';
import { ADMIN_PROFILE } from '../config/load.ts';
import type { Profile } from '../config/schema.ts';
import { KeywardError } from '../core/errors.ts';
import { type Identifier, identifiersOf, type SanSet } from '../core/identifiers.ts';
import type { Executor } from '../db/schema.ts';
import { evaluateNames, policyRefusal, type PolicySettings, type PolicySubject } from '../policy/index.ts';
import { decideExtensions } from './extensions.ts';
import type { IssuanceRequest, Requester } from './request.ts';

/** A request every check has passed: what the signing core is asked to sign. */
export interface Decision {
  request: IssuanceRequest;
  profile: Profile;
  /** Normalized: lower case, canonical IPs, no duplicates. */
  sans: SanSet;
  lifetimeMs: number;
  mustStaple: boolean;
}

/** What the decision reads: configuration and, for the name policy, the database. */
export interface DecisionInputs {
  db: Executor;
  profiles: ReadonlyMap<string, Profile>;
  policy: PolicySettings;
  /** Whether the certificate will carry revocation URLs (false when the CA has no HTTP base URL). */
  revocationUrls: boolean;
  /** The issuer that signs this profile now (the signing core's one choice), for the policy's issuer scope. */
  issuerId(profile: string): Promise<string>;
}

/**
 * Which checks apply to whom. The table is the point: every front end's request goes through it.
 *
 * | requester  | name policy                 | profiles          | single-label names |
 * |------------|-----------------------------|-------------------|--------------------|
 * | acme       | at newOrder (see below)     | offered, not admin| no                 |
 * | mesh-*     | here                        | any but admin     | no                 |
 * | operator   | here                        | any               | no                 |
 * | server     | no: the operator configured | tls-server        | yes (compose's     |
 * |            | these names for this server |                   | `keyward`)         |
 *
 * ACME names are decided by `checkNames` at newOrder, with the same rules; finalize then requires
 * the CSR's names to equal the order's (RFC 8555 §7.4), so evaluating again would cost the hot
 * path a query for the same answer. Rate limits: ACME counts certificates per name in the
 * statement that claims the order (src/acme/order-store.ts) so a refusal leaves the order ready;
 * the other requesters have no rate limit. Blocked keys are checked by the signing core in the
 * statement that reserves the serial, for everyone.
 */
function rulesFor(requester: Requester): { namePolicy: boolean; singleLabel: boolean } {
  switch (requester.kind) {
    case 'acme':
      return { namePolicy: false, singleLabel: false };
    case 'server':
      return { namePolicy: false, singleLabel: true };
    default:
      return { namePolicy: true, singleLabel: false };
  }
}

export function policySubjectOf(requester: Requester, issuerId: string): PolicySubject {
  return requester.kind === 'acme'
    ? { issuerId, accountId: requester.accountId, ...(requester.eabKid ? { eabKid: requester.eabKid } : {}) }
    : { issuerId };
}

/** The name policy for these identifiers: rejectedIdentifier with one subproblem per refused name. */
export async function checkNames(
  inputs: DecisionInputs,
  requester: Requester,
  identifiers: readonly Identifier[],
  profile: string,
): Promise<void> {
  const evaluation = await evaluateNames(
    inputs.db,
    inputs.policy,
    identifiers,
    policySubjectOf(requester, await inputs.issuerId(profile)),
  );
  if (!evaluation.allowed) throw policyRefusal(evaluation);
}

function profileFor(inputs: DecisionInputs, req: IssuanceRequest): Profile {
  const profile = inputs.profiles.get(req.profile);
  if (!profile)
    throw new KeywardError(
      'invalidProfile',
      `unknown profile "${req.profile}" (known: ${[...inputs.profiles.keys()].join(', ')})`,
    );
  // Certificates of the admin profile make their holder an administrator (src/http/admin-auth.ts).
  if (profile.name === ADMIN_PROFILE && req.requester.kind !== 'operator')
    throw new KeywardError('invalidProfile', `profile ${ADMIN_PROFILE} is issued only from the command line`);
  return profile;
}

/**
 * Decides a request: profile, its limits (key, name types and count, lifetime), requested
 * extensions, name policy. Reads only, so a refusal changes nothing; the caller spends what it
 * must (an order claim, a token) only after this passed.
 */
export async function decide(inputs: DecisionInputs, req: IssuanceRequest): Promise<Decision> {
  const profile = profileFor(inputs, req);
  const rules = rulesFor(req.requester);
  const sans = normalizeSans(req.names, { singleLabel: rules.singleLabel });
  const lifetimeMs = req.lifetimeMs ?? profile.defaultLifetime;
  checkAgainstProfile(profile, { type: req.publicKey.keyType, bits: req.publicKey.rsaBits }, sans, lifetimeMs);
  const hasOcspUrl = inputs.revocationUrls && !isPassiveRevocation(profile, lifetimeMs);
  const { mustStaple } = decideExtensions(profile, req.extensions ?? [], hasOcspUrl);
  if (rules.namePolicy) await checkNames(inputs, req.requester, identifiersOf(sans), profile.name);
  return { request: req, profile, sans, lifetimeMs, mustStaple };
}
