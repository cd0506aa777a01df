import { type ErrorKind, KeywardError } from '../core/errors.ts';

export type KmsErrorCode =
  | 'InvalidCiphertext'
  | 'WrongRootKey'
  | 'KeyUnavailable'
  | 'KeyDisabled'
  | 'AccessDenied'
  | 'NotFound'
  | 'InvalidInput'
  | 'AuditFailure'
  | 'InUse'
  | 'InvalidState'
  | 'ImportTokenInvalid'
  | 'ImportTokenExpired'
  | 'KeyMismatch'
  | 'Pkcs11Error'
  | 'Sealed'
  | 'InvalidShare'
  | 'ApprovalRequired';

/** Each code of the key hierarchy as a kind of the one error model (src/core/errors.ts). */
const KIND: Readonly<Record<KmsErrorCode, ErrorKind>> = {
  InvalidCiphertext: 'malformed',
  WrongRootKey: 'configuration',
  KeyUnavailable: 'unavailable',
  KeyDisabled: 'conflict',
  AccessDenied: 'unauthorized',
  NotFound: 'notFound',
  InvalidInput: 'malformed',
  AuditFailure: 'internal',
  InUse: 'conflict',
  InvalidState: 'conflict',
  ImportTokenInvalid: 'malformed',
  ImportTokenExpired: 'malformed',
  KeyMismatch: 'malformed',
  Pkcs11Error: 'unavailable',
  Sealed: 'unavailable',
  InvalidShare: 'malformed',
  ApprovalRequired: 'unauthorized',
};

/**
 * A refusal from the key hierarchy. `code` is the hierarchy's own (it is written to the audit log);
 * the kind decides how each transport renders it. Messages name key ids only, never key material.
 */
export class KmsError extends KeywardError {
  override name = 'KmsError';
  constructor(code: KmsErrorCode, message: string) {
    super(KIND[code], message, { code });
  }
}
