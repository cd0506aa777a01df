/** A refusal by the signing core; `code` maps onto the ACME error type of the same name. */
export class CaError extends Error {
  override name = 'CaError';
  constructor(
    readonly code:
      | 'badCSR'
      | 'badPublicKey'
      | 'rejectedIdentifier'
      | 'invalidProfile'
      | 'malformed'
      | 'notInitialized'
      | 'notFound'
      | 'alreadyRevoked'
      | 'badRevocationReason',
    message: string,
  ) {
    super(message);
  }
}
