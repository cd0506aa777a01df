import type { Selectable } from 'kysely';

import { ACME_ERROR_PREFIX } from '../core/errors.ts';
import type {
  AcmeAuthzsTable,
  AcmeAuthzStatus,
  AcmeChallengeStatus,
  AcmeChallengeType,
  AcmeOrdersTable,
  AcmeOrderStatus,
  AcmeProblemJson,
} from '../db/acme-schema.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeUrls } from './urls.ts';

export type OrderRow = Selectable<AcmeOrdersTable>;
export type AuthzRow = Selectable<AcmeAuthzsTable>;

/** A challenge as ACME shows it, read off its authorization's row. */
export interface ChallengeRow {
  id: string;
  authz_id: string;
  type: AcmeChallengeType;
  token: string;
  status: AcmeChallengeStatus;
  error: AcmeProblemJson | null;
  validated: Date | null;
}

/** A challenge's id (and URL path): its authorization's and its type. */
export const challengeId = (authzId: string, type: AcmeChallengeType): string => `${authzId}/${type}`;

/** The authorization's challenge of this type, if it offers one. Only the attempted one has moved on from pending. */
export function challengeOf(a: AuthzRow, type: AcmeChallengeType): ChallengeRow | undefined {
  const i = a.challenge_types.indexOf(type);
  if (i < 0) return undefined;
  const attempted = a.attempted === type && a.attempt_status !== null;
  return {
    id: challengeId(a.id, type),
    authz_id: a.id,
    type,
    token: a.challenge_tokens[i]!,
    status: attempted ? a.attempt_status! : 'pending',
    error: attempted ? a.attempt_error : null,
    validated: attempted && a.attempt_status === 'valid' ? a.validated_at : null,
  };
}

export function challengesOf(a: AuthzRow): ChallengeRow[] {
  return a.challenge_types.map((type) => challengeOf(a, type)!);
}

export function accountView(urls: AcmeUrls, a: AccountRow): Record<string, unknown> {
  const out: Record<string, unknown> = { status: a.status, contact: a.contact, orders: urls.accountOrders(a.id) };
  if (a.tos_agreed) out.termsOfServiceAgreed = true;
  if (a.eab_binding) out.externalAccountBinding = a.eab_binding;
  return out;
}

/** Stored status, with expiry applied at read time so no background sweep is needed for it. */
export function orderStatus(o: OrderRow, now: Date): AcmeOrderStatus {
  return (o.status === 'pending' || o.status === 'ready') && o.expires <= now ? 'invalid' : o.status;
}

export function orderView(urls: AcmeUrls, o: OrderRow, now: Date): Record<string, unknown> {
  const status = orderStatus(o, now);
  const out: Record<string, unknown> = {
    status,
    expires: o.expires.toISOString(),
    identifiers: o.identifiers,
    authorizations: o.authz_ids.map((id) => urls.authz(id)),
    finalize: urls.finalize(o.id),
    profile: o.profile,
  };
  if (o.not_before) out.notBefore = o.not_before.toISOString();
  if (o.not_after) out.notAfter = o.not_after.toISOString();
  if (o.replaces) out.replaces = o.replaces;
  if (o.certificate_serial && status === 'valid') out.certificate = urls.certificate(o.certificate_serial);
  if (status === 'invalid')
    out.error = o.error ?? { type: `${ACME_ERROR_PREFIX}malformed`, detail: 'The order expired', status: 400 };
  return out;
}

/**
 * An expired pending authorization reads as invalid: certbot's status enum has no "expired" and
 * x/crypto waits forever on unknown states; an expired valid one is "expired".
 */
export function authzStatus(a: AuthzRow, now: Date): AcmeAuthzStatus {
  if (a.expires > now) return a.status;
  if (a.status === 'pending') return 'invalid';
  if (a.status === 'valid') return 'expired';
  return a.status;
}

export function challengeView(urls: AcmeUrls, ch: ChallengeRow): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: ch.type,
    url: urls.challenge(ch.id),
    status: ch.status,
    token: ch.token,
  };
  if (ch.validated) out.validated = ch.validated.toISOString();
  if (ch.error) out.error = ch.error satisfies AcmeProblemJson;
  return out;
}

export function authzView(urls: AcmeUrls, a: AuthzRow, now: Date): Record<string, unknown> {
  const status = authzStatus(a, now);
  const challenges = challengesOf(a);
  const out: Record<string, unknown> = {
    identifier: { type: a.identifier_type, value: a.identifier_value },
    status,
    expires: a.expires.toISOString(),
    challenges: (status === 'valid' ? challenges.filter((c) => c.status === 'valid') : challenges).map((c) =>
      challengeView(urls, c),
    ),
  };
  if (a.wildcard) out.wildcard = true;
  return out;
}
