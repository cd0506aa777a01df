/**
 * Proving control of an identifier: the three ACME challenge checks, CAA, and the DNS resolver
 * they share. Checks report failures as ACME problems and never throw for anything the
 * applicant's network did; a thrown error means a bug on our side (serverInternal).
 */
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { checkDns01 } from './dns01.ts';
import { checkHttp01 } from './http01.ts';
import type { DnsResolver } from './resolver.ts';
import { checkTlsAlpn01 } from './tlsalpn01.ts';
import { type ChallengeKind, failure, type ValidationConfig, type ValidationOutcome } from './types.ts';

export { type CaaCheckOptions, checkCaa, type IssueValue, parseIssueValue } from './caa.ts';
export { checkDns01, dns01Digest } from './dns01.ts';
export { checkHttp01 } from './http01.ts';
export { reverseDnsName } from './identifier.ts';
export {
  type CaaRecord,
  createDnsResolver,
  type DnsFailureKind,
  DnsLookupError,
  type DnsResolver,
  type DnsResolverOptions,
  resolverForConfig,
} from './resolver.ts';
export { ACME_IDENTIFIER_OID, ACME_TLS_ALPN, checkTlsAlpn01, verifyAcmeTlsCertificate } from './tlsalpn01.ts';
export type {
  ChallengeKind,
  ValidationConfig,
  ValidationOutcome,
  ValidationProblem,
  ValidationProblemType,
} from './types.ts';
export { defaultValidationConfig } from './types.ts';

/** Which challenge types may prove control of an identifier (RFC 8738 §7; wildcards: DNS only). */
export function challengeKindsFor(id: AcmeIdentifier): ChallengeKind[] {
  if (id.type === 'ip') return ['http-01', 'tls-alpn-01'];
  if (id.value.startsWith('*.')) return ['dns-01'];
  return ['http-01', 'dns-01', 'tls-alpn-01'];
}

export async function validateChallenge(
  kind: ChallengeKind,
  id: AcmeIdentifier,
  token: string,
  keyAuthorization: string,
  cfg: ValidationConfig,
  resolver: DnsResolver,
): Promise<ValidationOutcome> {
  if (!challengeKindsFor(id).includes(kind)) {
    return failure('malformed', `${kind} cannot validate ${id.type} identifier ${id.value}`);
  }
  switch (kind) {
    case 'http-01':
      return checkHttp01(id, token, keyAuthorization, cfg, resolver);
    case 'dns-01':
      return checkDns01(id, keyAuthorization, cfg, resolver);
    case 'tls-alpn-01':
      return checkTlsAlpn01(id, keyAuthorization, cfg, resolver);
    default: {
      const unknown: never = kind;
      return failure('malformed', `Unsupported challenge type ${String(unknown)}`);
    }
  }
}
