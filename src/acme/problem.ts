import { CaError } from '../ca/errors.ts';
import type { AcmeProblemJson } from '../db/acme-schema.ts';

/** RFC 8555 §6.7 error types, plus alreadyReplaced (RFC 9773) and invalidProfile (profiles draft). */
export type AcmeErrorType =
  | 'accountDoesNotExist'
  | 'alreadyReplaced'
  | 'alreadyRevoked'
  | 'badCSR'
  | 'badNonce'
  | 'badPublicKey'
  | 'badRevocationReason'
  | 'badSignatureAlgorithm'
  | 'caa'
  | 'compound'
  | 'connection'
  | 'dns'
  | 'externalAccountRequired'
  | 'incorrectResponse'
  | 'invalidContact'
  | 'invalidProfile'
  | 'malformed'
  | 'orderNotReady'
  | 'rateLimited'
  | 'rejectedIdentifier'
  | 'serverInternal'
  | 'tls'
  | 'unauthorized'
  | 'unsupportedContact'
  | 'unsupportedIdentifier'
  | 'userActionRequired';

export const ACME_ERROR_PREFIX = 'urn:ietf:params:acme:error:';

const DEFAULT_STATUS: Partial<Record<AcmeErrorType, number>> = {
  unauthorized: 403,
  userActionRequired: 403,
  orderNotReady: 403,
  externalAccountRequired: 403,
  rateLimited: 429,
  serverInternal: 500,
  alreadyReplaced: 409,
};

export interface Subproblem {
  type: AcmeErrorType;
  detail: string;
  identifier: { type: string; value: string };
}

/** An ACME error answer; thrown anywhere in a request and rendered by the route wrapper. */
export class AcmeProblem extends Error {
  override name = 'AcmeProblem';
  readonly status: number;
  subproblems: Subproblem[] | undefined;
  /** Extra members of the problem document (e.g. `algorithms` for badSignatureAlgorithm). */
  extra: Record<string, unknown> = {};
  headers: Record<string, string> = {};

  constructor(
    readonly type: AcmeErrorType,
    readonly detail: string,
    status?: number,
  ) {
    super(detail);
    this.status = status ?? DEFAULT_STATUS[type] ?? 400;
  }

  toJson(): AcmeProblemJson & Record<string, unknown> {
    const doc: AcmeProblemJson & Record<string, unknown> = {
      type: ACME_ERROR_PREFIX + this.type,
      detail: this.detail,
      status: this.status,
      ...this.extra,
    };
    if (this.subproblems?.length) {
      doc.subproblems = this.subproblems.map((s) => ({
        type: ACME_ERROR_PREFIX + s.type,
        detail: s.detail,
        identifier: s.identifier,
      }));
    }
    return doc;
  }
}

export const malformed = (detail: string): AcmeProblem => new AcmeProblem('malformed', detail);
export const unauthorized = (detail: string): AcmeProblem => new AcmeProblem('unauthorized', detail);
export const notFound = (what = 'resource'): AcmeProblem => new AcmeProblem('malformed', `No such ${what}`, 404);

/** The fixed text acme.sh looks for before it retries (it ignores the type). */
export const BAD_NONCE_DETAIL = 'JWS has an invalid anti-replay nonce';

/** Maps an error from a lower layer onto an ACME problem; anything unknown is serverInternal. */
export function toProblem(err: unknown): AcmeProblem {
  if (err instanceof AcmeProblem) return err;
  if (err instanceof CaError) {
    switch (err.code) {
      case 'notFound':
        return new AcmeProblem('malformed', err.message, 404);
      case 'notInitialized':
        return new AcmeProblem('serverInternal', err.message, 503);
      default:
        return new AcmeProblem(err.code, err.message);
    }
  }
  return new AcmeProblem('serverInternal', 'The server could not process the request');
}
