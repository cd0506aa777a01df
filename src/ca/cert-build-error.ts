import { DerError } from './der.ts';
import { NameError } from './general-names.ts';
import { SpkiError } from './spki.ts';

/** A certificate request the signing core refuses to sign (a hard limit, or malformed input). */
export class CertBuildError extends Error {
  override readonly name = 'CertBuildError';
}

/** Runs an encoder, reporting bad names, DER or keys in its input as a CertBuildError. */
export function asCertBuildError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NameError || e instanceof DerError || e instanceof SpkiError) throw new CertBuildError(e.message);
    throw e;
  }
}
