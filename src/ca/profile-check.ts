import type { Profile, SubjectKeyType } from '../config/schema.ts';
import { KeywardError } from '../core/errors.ts';
import type { SanSet } from '../core/identifiers.ts';

export interface SubjectKey {
  type: SubjectKeyType;
  /** Modulus size for RSA keys. */
  bits?: number;
}

/**
 * The profile's hard limits, checked by the signing core itself even when a front end already
 * decided (defence in depth): key type, name types and count, lifetime.
 */
export function checkAgainstProfile(profile: Profile, key: SubjectKey, sans: SanSet, lifetimeMs: number): void {
  if (!profile.keyTypes.includes(key.type)) {
    throw new KeywardError(
      'badPublicKey',
      `profile ${profile.name} does not allow ${key.type} keys (allowed: ${profile.keyTypes.join(', ')})`,
    );
  }
  if (key.type === 'rsa' && (key.bits ?? 0) < profile.minRsaBits) {
    throw new KeywardError(
      'badPublicKey',
      `profile ${profile.name} needs RSA keys of at least ${profile.minRsaBits} bits, got ${key.bits}`,
    );
  }
  let count = 0;
  for (const type of ['dns', 'ip', 'uri', 'email'] as const) {
    const names = sans[type];
    count += names.length;
    if (names.length > 0 && !profile.sanTypes.includes(type)) {
      throw new KeywardError(
        'rejectedIdentifier',
        `profile ${profile.name} does not allow ${type} names (${names.join(', ')})`,
      );
    }
  }
  if (count === 0) throw new KeywardError('badCSR', 'the request names no identifiers (subject alternative names)');
  if (count > profile.maxNames)
    throw new KeywardError(
      'rejectedIdentifier',
      `profile ${profile.name} allows at most ${profile.maxNames} names, got ${count}`,
    );
  if (lifetimeMs <= 0) throw new KeywardError('malformed', 'the requested lifetime must be positive');
  if (lifetimeMs > profile.maxLifetime) {
    throw new KeywardError(
      'malformed',
      `lifetime ${Math.round(lifetimeMs / 1000)}s exceeds profile ${profile.name}'s maximum of ${Math.round(profile.maxLifetime / 1000)}s`,
    );
  }
}
