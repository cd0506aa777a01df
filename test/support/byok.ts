import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/**
 * Wraps a private key for `kms import --wrapped` the way an HSM or a cloud KMS export does, with the
 * real openssl binary: RSA-OAEP-SHA-256(ephemeral AES-256 key) ‖ AES-KWP(PKCS#8 DER). Returns the blob's path.
 */
export function wrapForImport(dir: string, wrappingPublicKeyPem: string, keyFile: string, name: string): string {
  const pub = join(dir, `${name}.wrap.pub`);
  writeFileSync(pub, wrappingPublicKeyPem);
  const der = join(dir, `${name}.p8.der`);
  ossl('pkcs8', '-topk8', '-nocrypt', '-in', keyFile, '-outform', 'DER', '-out', der);
  const eph = join(dir, `${name}.eph`);
  ossl('rand', '-out', eph, '32');
  const a = join(dir, `${name}.a`);
  ossl(
    'pkeyutl',
    '-encrypt',
    '-pubin',
    '-inkey',
    pub,
    '-in',
    eph,
    '-out',
    a,
    '-pkeyopt',
    'rsa_padding_mode:oaep',
    '-pkeyopt',
    'rsa_oaep_md:sha256',
    '-pkeyopt',
    'rsa_mgf1_md:sha256',
  );
  const b = join(dir, `${name}.b`);
  ossl('enc', '-id-aes256-wrap-pad', '-K', readFileSync(eph).toString('hex'), '-iv', 'A65959A6', '-in', der, '-out', b);
  const blob = join(dir, `${name}.blob`);
  writeFileSync(blob, Buffer.concat([readFileSync(a), readFileSync(b)]));
  return blob;
}
