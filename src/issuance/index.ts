import type { CertificateAuthority, IssuedCertificate, IssueRequest } from '../ca/authority.ts';
import type { Profile } from '../config/schema.ts';
import { type Clock, systemClock } from '../core/clock.ts';
import type { Identifier } from '../core/identifiers.ts';
import type { Db } from '../db/schema.ts';
import type { PolicySettings } from '../policy/index.ts';
import type { CaaFreshnessSettings } from './caa-freshness.ts';
import { checkNames, decide, type Decision, type DecisionInputs } from './decide.ts';
import { countNamesStrictly, type NameLimitSettings, namesCountedWithRecord } from './name-limit.ts';
import { checkReplaces, type ReplacedCertificate, type Replaces } from './replaces.ts';
import { type IssuanceRequest, type Requester, requesterLabel } from './request.ts';

export type { CaaFreshnessSettings } from './caa-freshness.ts';
export { type Decision, policySubjectOf } from './decide.ts';
export { OID_TLS_FEATURE } from './extensions.ts';
export type { NameCount, NameLimitSettings } from './name-limit.ts';
export { parseReplaces, type ReplacedCertificate, type Replaces } from './replaces.ts';
export type {
  Gathered,
  IssuanceRequest,
  ProofOfControl,
  RequestedExtension,
  Requester,
  SubjectPublicKey,
} from './request.ts';
export { requesterLabel } from './request.ts';

/**
 * The front end's own bookkeeping, run in the signing core's transactions (see IssueRequest). With
 * `recordWith`, the decision's names are counted in the statement that records the certificate
 * (judged on the counters the decision read: finalizes in flight at once may each pass the limit
 * by one); otherwise strictly, in the transaction that reserves the serial.
 */
export type IssuanceHooks = Pick<
  IssueRequest,
  'onReserved' | 'onAbandoned' | 'onRecorded' | 'recordWith' | 'reserveWith'
>;

/** The part of the signing core issuance uses. */
export type SigningCore = Pick<CertificateAuthority, 'issue' | 'issuerForProfile'>;

export interface IssuanceDeps {
  db: Db;
  ca: SigningCore;
  profiles: ReadonlyMap<string, Profile>;
  policy: PolicySettings;
  /** False when the CA writes no CRL/OCSP URLs into certificates (no HTTP base URL). */
  revocationUrls: boolean;
  /** rateLimits.certificatesPerName. */
  nameLimit: NameLimitSettings;
  caa: CaaFreshnessSettings;
  clock?: Clock;
}

/**
 * The one issuance decision path. Every front end (ACME finalize, /v1/sign, /v1/renew, `keyward
 * issue`, the HTTPS listener's own identity) translates its input into an IssuanceRequest, and
 * this decides it (decide.ts) and has the signing core sign it. Front ends render the outcome.
 */
export class Issuance {
  private readonly inputs: DecisionInputs;

  constructor(private readonly deps: IssuanceDeps) {
    this.inputs = {
      db: deps.db,
      profiles: deps.profiles,
      policy: deps.policy,
      revocationUrls: deps.revocationUrls,
      issuerId: async (profile) => (await deps.ca.issuerForProfile(profile)).id,
      nameLimit: deps.nameLimit,
      caa: deps.caa,
      now: () => (deps.clock ?? systemClock).now(),
    };
  }

  /** The configured profiles (front ends name one; the decision checks it). */
  get profiles(): ReadonlyMap<string, Profile> {
    return this.deps.profiles;
  }

  /** Everything that can refuse before anything is written. */
  decide(req: IssuanceRequest): Promise<Decision> {
    return decide(this.inputs, req);
  }

  /** The name policy alone, for a front end that refuses names early (ACME newOrder). */
  checkNames(requester: Requester, identifiers: readonly Identifier[], profile: string): Promise<void> {
    return checkNames(this.inputs, requester, identifiers, profile);
  }

  /** RFC 9773 `replaces`, for the front end that takes it (ACME newOrder); `found` is what it names. */
  checkReplaces(
    requester: Requester,
    names: readonly Identifier[],
    replaces: Replaces,
    found: ReplacedCertificate | undefined,
  ): void {
    checkReplaces(requester, names, replaces, found);
  }

  /** Signs a decided request. */
  sign(decision: Decision, hooks: IssuanceHooks = {}): Promise<IssuedCertificate> {
    const req = decision.request;
    const { onReserved, ...rest } = hooks;
    const count = decision.nameCount;
    const now = this.inputs.now();
    const countWithRecord = count !== undefined && hooks.recordWith !== undefined;
    const countStrictly = count !== undefined && !countWithRecord ? count : undefined;
    return this.deps.ca.issue({
      subjectPublicKeyInfo: req.publicKey.spki,
      keyType: req.publicKey.keyType,
      ...(req.publicKey.rsaBits !== undefined ? { rsaBits: req.publicKey.rsaBits } : {}),
      ...(req.commonName !== undefined ? { commonName: req.commonName } : {}),
      sans: decision.sans,
      profile: decision.profile.name,
      lifetimeMs: decision.lifetimeMs,
      ...(decision.mustStaple ? { mustStaple: true } : {}),
      requester: requesterLabel(req.requester),
      ...rest,
      ...(countWithRecord
        ? { recordAlso: [{ writer: namesCountedWithRecord(count.rule), item: { keys: count.keys, now } }] }
        : {}),
      ...(countStrictly || onReserved
        ? {
            onReserved: async (trx, serial) => {
              if (countStrictly) await countNamesStrictly(trx, countStrictly, now);
              await onReserved?.(trx, serial);
            },
          }
        : {}),
    });
  }

  /** Decides, then signs. */
  async issue(req: IssuanceRequest, hooks: IssuanceHooks = {}): Promise<IssuedCertificate> {
    return this.sign(await this.decide(req), hooks);
  }
}
