import { events } from '../core/events.ts';
import type { Logger } from '../core/log.ts';

/**
 * The log lines operators search for: one per issuance, revocation, failed validation and refused
 * key operation.
 * Events carry names, serials and principals only, so no key material or secret can reach the log.
 * Returns the function that stops logging.
 */
export function logEvents(log: Logger): () => void {
  const stops = [
    events.certificateIssued.subscribe((e) =>
      log.info(
        {
          serial: e.serial,
          names: e.names,
          profile: e.profile,
          issuer: e.issuerId,
          requester: e.requester,
          notAfter: e.notAfter.toISOString(),
        },
        'certificate issued',
      ),
    ),
    events.certificateRevoked.subscribe((e) =>
      log.info(
        { serial: e.serial, reason: e.reason, issuer: e.issuerId, requester: e.requester },
        'certificate revoked',
      ),
    ),
    // Every failed attempt, final (`invalid`) or to be retried: the reason is otherwise only in the
    // challenge object, which the operator does not see.
    events.validation.subscribe((e) => {
      if (e.outcome !== 'valid')
        log.info(
          {
            identifier: e.identifier,
            type: e.type,
            outcome: e.outcome,
            problem: e.problem?.type.replace('urn:ietf:params:acme:error:', ''),
            detail: e.problem?.detail,
            account: e.account,
          },
          'validation failed',
        );
    }),
    events.keyOperation.subscribe((e) => {
      if (e.outcome === 'denied')
        log.warn(
          { key: e.keyId, action: e.action, principal: e.principal, error: e.errorCode },
          'key operation denied',
        );
    }),
  ];
  return () => stops.forEach((stop) => stop());
}
