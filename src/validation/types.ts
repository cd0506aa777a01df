import type { ErrorKind } from '../core/errors.ts';

/** Where the checks connect and how long they may take; tests point all of it at loopback. */
export interface ValidationConfig {
  /** Port for http-01 fetches and for `http:` redirect targets (80 in production). */
  httpPort: number;
  /** Port for tls-alpn-01 and for `https:` redirect targets of http-01 (443 in production). */
  tlsAlpnPort: number;
  /** `host:port` of the DNS resolver to use; undefined = the system's configured servers. */
  dnsResolver?: string;
  /** Upper bound for one check, redirects and DNS look-ups included. */
  timeoutMs: number;
  maxRedirects: number;
  maxBodyBytes: number;
}

export const defaultValidationConfig: Readonly<ValidationConfig> = Object.freeze({
  httpPort: 80,
  tlsAlpnPort: 443,
  timeoutMs: 10_000,
  maxRedirects: 10,
  maxBodyBytes: 8 * 1024,
});

export type ChallengeKind = 'http-01' | 'dns-01' | 'tls-alpn-01';

/** The error kinds a check reports (each is an ACME error type of the same name). */
export type ValidationProblemType = Extract<
  ErrorKind,
  'connection' | 'dns' | 'incorrectResponse' | 'unauthorized' | 'tls' | 'caa' | 'malformed'
>;

export interface ValidationProblem {
  type: ValidationProblemType;
  detail: string;
}

export type ValidationOutcome = { ok: true; addressesUsed?: string[] } | { ok: false; problem: ValidationProblem };

export function failure(type: ValidationProblemType, detail: string): ValidationOutcome {
  return { ok: false, problem: { type, detail } };
}
