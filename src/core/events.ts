import { channel } from 'node:diagnostics_channel';

/**
 * What Keyward reports about its own work, as `node:diagnostics_channel` topics: the layer where a
 * thing happens publishes a plain object and knows nothing of logs or metrics; `keyward serve`
 * subscribes (src/http/metrics.ts, src/http/event-log.ts), and so may an APM agent. With nobody
 * subscribed a publish is one boolean test, so the CLI and the hot paths pay nothing for it.
 * Events never carry key material, secrets or request bodies.
 */
export interface Topic<T> {
  publish(event: T): void;
  /** Returns the function that unsubscribes. A subscriber that throws is reported, never rethrown. */
  subscribe(fn: (event: T) => void): () => void;
}

function topic<T>(name: string): Topic<T> {
  const ch = channel(`keyward:${name}`);
  return {
    publish: (event) => {
      if (ch.hasSubscribers) ch.publish(event);
    },
    subscribe: (fn) => {
      // diagnostics_channel rethrows a subscriber's error on the next tick (an uncaught exception);
      // observing must never take the server down.
      const safe = (message: unknown) => {
        try {
          fn(message as T);
        } catch (err) {
          process.emitWarning(`keyward:${name} subscriber failed: ${(err as Error).message}`);
        }
      };
      ch.subscribe(safe);
      return () => void ch.unsubscribe(safe);
    },
  };
}

/** A certificate signed and recorded (every front end's issuance passes here). */
export interface CertificateIssued {
  serial: string;
  issuerId: string;
  profile: string;
  requester: string;
  names: string[];
  notAfter: Date;
  /** From the signing core receiving the decided request to the certificate being recorded. */
  seconds: number;
}

export interface CertificateRevoked {
  serial: string;
  issuerId: string;
  reason: string;
  requester: string;
}

/** Every key use and administrative change, as written to the audit log. */
export interface KeyOperation {
  keyId: string | null;
  action: string;
  principal: string;
  outcome: 'success' | 'denied' | 'failure';
  errorCode: string | null;
}

/** One ACME request answered: `problem` is the error type (without the URN prefix), if any. */
export interface AcmeRequest {
  /** The resource, e.g. `new-order`, `order/:id/finalize`. */
  resource: string;
  problem: string | undefined;
}

/** One validation attempt's result; `retry` means it failed and will be tried again. */
export interface ValidationResult {
  identifier: string;
  type: string;
  outcome: 'valid' | 'invalid' | 'retry';
  problem?: { type: string; detail: string };
  /** The ACME account that asked. */
  account?: string;
}

export interface OcspAnswered {
  /** `cache`: a pre-signed answer; `signed`: signed for this request; `error`: an error status. */
  source: 'cache' | 'signed' | 'error';
}

export interface CrlPublished {
  issuerId: string;
  shard: number;
  entries: number;
  bytes: number;
  seconds: number;
}

/** A request for a database connection that found none free and had to queue. */
export interface PoolWait {
  seconds: number;
}

export const events = {
  certificateIssued: topic<CertificateIssued>('certificate-issued'),
  certificateRevoked: topic<CertificateRevoked>('certificate-revoked'),
  keyOperation: topic<KeyOperation>('key-operation'),
  acmeRequest: topic<AcmeRequest>('acme-request'),
  validation: topic<ValidationResult>('validation'),
  ocspAnswered: topic<OcspAnswered>('ocsp-answered'),
  crlPublished: topic<CrlPublished>('crl-published'),
  poolWait: topic<PoolWait>('pool-wait'),
};
