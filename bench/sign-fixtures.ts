import { generateKeyPairSync, KeyObject, randomBytes, webcrypto } from 'node:crypto';

import { buildSelfSignedCa, buildSubordinateCa } from '../src/ca/ca-builder.ts';
import type { IssuerInfo } from '../src/ca/issuer-certificate.ts';
import type { LeafSpec } from '../src/ca/leaf-builder.ts';
import { OID } from '../src/ca/oids.ts';
import { keyObjectSigner } from '../src/kms/signer.ts';

/** A P-256 root + issuing intermediate and a typical mTLS leaf request, for signing benchmarks. */
export interface SigningFixture {
  issuer: IssuerInfo;
  /** The intermediate's key as WebCrypto sees it, for @peculiar/x509. */
  issuerKeys: webcrypto.CryptoKeyPair;
  issuerPrivateKey: KeyObject;
  /** A fresh leaf request (new random serial) each call. */
  leafSpec(): LeafSpec;
}

export async function signingFixture(): Promise<SigningFixture> {
  const gen = async (): Promise<webcrypto.CryptoKeyPair> =>
    (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
  const rootKeys = await gen();
  const issuerKeys = await gen();
  const rootSigner = keyObjectSigner(KeyObject.from(rootKeys.privateKey));
  const issuerPrivateKey = KeyObject.from(issuerKeys.privateKey);
  const issuerSigner = keyObjectSigner(issuerPrivateKey);
  const now = Date.now();
  const year = 365 * 86400_000;
  const root = await buildSelfSignedCa(
    {
      serial: randomBytes(16),
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 10 * year),
      subject: { commonName: 'Bench Root', organization: 'Keyward' },
      subjectPublicKeyInfo: rootSigner.spki,
      pathLength: 1,
    },
    rootSigner,
  );
  const intermediate = await buildSubordinateCa(
    {
      serial: randomBytes(16),
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 5 * year),
      subject: { commonName: 'Bench Issuing CA', organization: 'Keyward' },
      subjectPublicKeyInfo: issuerSigner.spki,
      pathLength: 0,
    },
    { certificate: root, signer: rootSigner },
  );
  const subjectSpki = new Uint8Array(
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }),
  );
  return {
    issuer: { certificate: intermediate, signer: issuerSigner },
    issuerKeys,
    issuerPrivateKey,
    leafSpec: () => ({
      serial: randomBytes(16),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86400_000),
      subjectPublicKeyInfo: subjectSpki,
      commonName: 'api.default.svc.cluster.local',
      sans: {
        dns: ['api.default.svc.cluster.local', 'api.default.svc'],
        ip: ['10.96.0.12'],
        uri: ['spiffe://cluster.local/ns/default/sa/api'],
        email: [],
      },
      extKeyUsages: [OID.serverAuth, OID.clientAuth],
      keyEncipherment: false,
      crlDistributionPoint: 'http://keyward.internal/crl/1.crl',
      ocspUrl: 'http://keyward.internal/ocsp',
      caIssuersUrl: 'http://keyward.internal/issuer.cer',
    }),
  };
}
