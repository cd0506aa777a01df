import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { SecureContextOptions } from 'node:tls';

import type { CertificateAuthority } from '../ca/authority.ts';

export interface TlsIdentity {
  options: SecureContextOptions;
  notAfter: Date;
  notBefore: Date;
  serial: string;
}

/** The HTTPS listener's own certificate, issued by this CA for the configured hostnames. */
export async function issueTlsIdentity(ca: CertificateAuthority, hostnames: readonly string[]): Promise<TlsIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const issued = await ca.issue({
    subjectPublicKeyInfo: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
    keyType: 'ecdsa-p256',
    commonName: hostnames[0],
    sans: {
      dns: hostnames.filter((h) => isIP(h) === 0),
      ip: hostnames.filter((h) => isIP(h) !== 0),
      uri: [],
      email: [],
    },
    profile: 'tls-server',
    requester: 'keyward:https-listener',
  });
  return {
    options: { key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: issued.chainPem },
    notAfter: issued.notAfter,
    notBefore: issued.notBefore,
    serial: issued.serial,
  };
}

/** When to renew: two thirds into the lifetime, as certbot and step-ca's renewers do. */
export function renewalDelay(identity: TlsIdentity, now = Date.now()): number {
  const lifetime = identity.notAfter.getTime() - identity.notBefore.getTime();
  return Math.max(1_000, identity.notBefore.getTime() + (lifetime * 2) / 3 - now);
}
