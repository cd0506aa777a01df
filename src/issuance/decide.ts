import { normalizeSans } from '../ca/names.ts';
import { checkAgainstProfile } from '../ca/profile-check.ts';
import { isPassiveRevocation } from '../ca/revocation-urls.ts';
import { ADMIN_PROFILE } from '../config/load.ts';
import type { Profile } from '../config/schema.ts';
import { KeywardError } from '../core/errors.ts';
import { type Identifier, identifiersOf, type SanSet } from '../core/identifiers.ts';
import type { Executor } from '../db/schema.ts';
import { evaluateNames, policyRefusal, type PolicySettings, type PolicySubject } from '../policy/index.ts';
import { type CaaFreshnessSettings, checkCaaFreshness } from './caa-freshness.ts';
import { decideExtensions } from './extensions.ts';
import { checkNameCount, type NameCount, nameCountFor, type NameLimitSettings } from './name-limit.ts';
import type { IssuanceRequest, Requester } from './request.ts';

/** A request every check has passed: what the signing core is asked to sign. */
export interface Decision {
  request: IssuanceRequest;
  profile: Profile;
  /** Normalized: lower case, canonical IPs, no duplicates. */
  sans: SanSet;
  lifetimeMs: number;
  mustStaple: boolean;
  /** The names to count against certificatesPerName when the certificate is issued. */
  nameCount?: NameCount;
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
  /** rateLimits.certificatesPerName. */
  nameLimit: NameLimitSettings;
  caa: CaaFreshnessSettings;
  now(): Date;
}

/**
 * Which checks apply to whom. The table is the point: every front end's request goes through it.
 *
 * | requester  | name policy                 | profiles          | single-label names |
 * |------------|-----------------------------|-------------------|--------------------|
 * | acme       | at newOrder and again here  | offered, not admin| no                 |
 * | mesh-*     | here                        | any but admin     | no                 |
 * | operator   | here                        | any               | no                 |
 * | server     | no: the operator configured | tls-server        | yes (compose's     |
 * |            | these names for this server |                   | `keyward`)         |
 *
 * ACME names are decided at newOrder, where a refusal is cheapest, and again at finalize, so a
 * deny rule added in between holds (the rules are in memory, src/policy/rules-cache.ts: no query).
 * Certificates per name: the front ends in rateLimits.certificatesPerName.appliesTo
 * (name-limit.ts). CAA freshness: ACME only (caa-freshness.ts). Blocked keys are checked by the
 * signing core in the statement that reserves the serial, for everyone.
 */
function rulesFor(requester: Requester): { namePolicy: boolean; singleLabel: boolean } {
  return requester.kind === 'server'
    ? { namePolicy: false, singleLabel: true }
    : { namePolicy: true, singleLabel: false };
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
 * extensions, name policy, certificates per name, CAA freshness. Reads only, so a refusal changes
 * nothing; the caller spends what it must (an order claim, a token) only after this passed.
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
  const now = inputs.now();
  const nameCount = nameCountFor(inputs.nameLimit, req.requester, sans);
  if (nameCount) await checkNameCount(inputs.db, nameCount, req.gathered?.nameCounters, now);
  // Last: the only check that may ask the network.
  await checkCaaFreshness(inputs.caa, req.requester, req.gathered?.proofs, now);
  return { request: req, profile, sans, lifetimeMs, mustStaple, ...(nameCount ? { nameCount } : {}) };
}
