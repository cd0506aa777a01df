import { webcrypto } from 'node:crypto';

import { toPem } from '../ca/pem.ts';
import { x509 } from '../ca/x509.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export interface ClientKey {
  keyPem: string;
  csrPem: string;
}

/**
 * A fresh ECDSA P-256 key and a CSR for it. The CSR names nothing: the server certifies exactly
 * the names the token (or the current certificate) grants, so the client need not know them.
 */
export async function newKeyAndCsr(): Promise<ClientKey> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: alg, name: '' });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = toPem(pkcs8, 'PRIVATE KEY');
  return { keyPem, csrPem: csr.toString('pem') + '\n' };
}
