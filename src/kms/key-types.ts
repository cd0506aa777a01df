import { generateKeyPairSync, type KeyObject } from 'node:crypto';

import { KmsError } from './errors.ts';

export type AsymmetricAlg = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ed25519';

export function generateKeyPair(alg: AsymmetricAlg): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (alg) {
    case 'ecdsa-p256':
      return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    case 'ecdsa-p384':
      return generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096':
      return generateKeyPairSync('rsa', { modulusLength: Number(alg.slice(4)) });
    case 'ed25519':
      return generateKeyPairSync('ed25519');
    default:
      throw new KmsError('InvalidInput', `unsupported key algorithm ${String(alg)}`);
  }
}

/** Names a key object with our algorithm label, for keys that are imported rather than generated. */
export function algOf(key: KeyObject): AsymmetricAlg {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (type === 'ec' && details?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  if (type === 'ec' && details?.namedCurve === 'secp384r1') return 'ecdsa-p384';
  if (type === 'rsa' && [2048, 3072, 4096].includes(details?.modulusLength ?? 0)) {
    return `rsa-${details!.modulusLength}` as AsymmetricAlg;
  }
  if (type === 'ed25519') return 'ed25519';
  throw new KmsError(
    'InvalidInput',
    `unsupported key (${type ?? 'unknown'} ${details?.namedCurve ?? details?.modulusLength ?? ''})`,
  );
}
