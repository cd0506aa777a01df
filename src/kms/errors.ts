/** A refusal from the key hierarchy. Messages name key ids only, never key material. */
export class KmsError extends Error {
  override name = 'KmsError';
  constructor(
    readonly code:
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
      | 'ApprovalRequired',
    message: string,
  ) {
    super(message);
  }
}
