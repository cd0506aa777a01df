import { createHash, createPublicKey, X509Certificate } from 'node:crypto';

import { systemClock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { Executor, IssuerRow } from '../db/schema.ts';
import { insertIssuer } from './authority.ts';
import { parseIssuerCertificate } from './issuer-certificate.ts';
import { change, checkProfiles, type IssuerLifecycleDeps } from './issuer-lifecycle.ts';
import { x509 } from './x509.ts';

export interface AdoptSpec {
  /** A key in the hierarchy (`kms import`), usage `intermediate`. */
  keyId: string;
  /** The CA certificate of that key, DER. */
  certificate: Uint8Array;
  /** A root certificate to trust, when the certificate was not signed by a root we hold. */
  trust?: Uint8Array;
  profiles?: string[];
  activate?: boolean;
}

export interface Adopted {
  issuer: IssuerRow;
  /** The root recorded from `trust`, when it was not known before. */
  trustedRoot?: IssuerRow;
}

const refuse = (code: string, detail: string) => new KeywardError('malformed', detail, { code });

function parse(der: Uint8Array, what: string): { peculiar: x509.X509Certificate; node: X509Certificate } {
  try {
    return { peculiar: new x509.X509Certificate(new Uint8Array(der)), node: new X509Certificate(Buffer.from(der)) };
  } catch {
    throw refuse('BadCertificate', `${what} is not an X.509 certificate`);
  }
}

/**
 * A CA certificate as RFC 5280 requires: basicConstraints with cA (4.2.1.9) and keyUsage with
 * keyCertSign (4.2.1.3), valid now. Leaves signed under anything less fail path validation.
 */
function checkCa(cert: x509.X509Certificate, what: string, now: Date): void {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca)
    throw refuse('NotACa', `${what} (${cert.subject}) is not a CA certificate: basicConstraints cA is not set`);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (!ku)
    throw refuse('NotACa', `${what} (${cert.subject}) has no keyUsage extension; a CA certificate needs keyCertSign`);
  if ((ku.usages & x509.KeyUsageFlags.keyCertSign) === 0)
    throw refuse('NotACa', `${what} (${cert.subject}) is not a CA certificate: its keyUsage lacks keyCertSign`);
  if (cert.notAfter.getTime() <= now.getTime())
    throw refuse('Expired', `${what} (${cert.subject}) expired at ${cert.notAfter.toISOString()}`);
  if (cert.notBefore.getTime() > now.getTime())
    throw refuse('NotYetValid', `${what} (${cert.subject}) is not valid before ${cert.notBefore.toISOString()}`);
}

const spkiDigest = (spki: Uint8Array | Buffer) =>
  createHash('sha256')
    .update(
      createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' }),
    )
    .digest();

/** The key must be ours, usable and unused, and be the certificate's key. */
async function checkKey(trx: Executor, rows: IssuerRow[], keyId: string, cert: x509.X509Certificate): Promise<void> {
  const key = await trx
    .selectFrom('kms_keys')
    .select(['id', 'usage', 'state', 'alg', 'spki_sha256'])
    .where('id', '=', keyId)
    .executeTakeFirst();
  if (!key) throw new KeywardError('notFound', `no key ${keyId} in the key hierarchy (see keyward kms list)`);
  if (key.state !== 'Enabled')
    throw new KeywardError('conflict', `key ${keyId} is ${key.state}; only an enabled key signs`);
  if (key.usage !== 'intermediate')
    throw new KeywardError(
      'conflict',
      `key ${keyId} has usage ${key.usage}; ca adopt makes an intermediate: import the key with kms import --usage intermediate`,
    );
  const user = rows.find((r) => r.key_id === keyId);
  if (user) throw new KeywardError('conflict', `key ${keyId} already signs for issuer ${user.id}`);
  const certDigest = spkiDigest(new Uint8Array(cert.publicKey.rawData));
  if (!certDigest.equals(Buffer.from(key.spki_sha256)))
    throw refuse(
      'KeyMismatch',
      `key ${keyId} (${key.alg}, SPKI SHA-256 ${Buffer.from(key.spki_sha256).toString('hex').slice(0, 16)}…) does not match the certificate's public key (SPKI SHA-256 ${certDigest.toString('hex').slice(0, 16)}…)`,
    );
}

const signedBy = (cert: X509Certificate, issuer: X509Certificate) =>
  cert.checkIssued(issuer) && cert.verify(issuer.publicKey);

/** A root may certify an intermediate only if its path length allows one CA below it. */
function checkPathLength(root: Uint8Array, subject: string): void {
  if (parseIssuerCertificate(root).pathLength === 0)
    throw refuse('PathLength', `root ${subject} has path length 0 and cannot certify an intermediate`);
}

/**
 * `ca adopt`: a key imported with `kms import` and its CA certificate become an intermediate issuer
 * (pending unless `activate`). The certificate must be a CA, be the key's, and be signed by a root
 * we hold or by the root given as `trust`, which is then recorded as a trusted root: listed in
 * /roots.pem and the trust bundle, signing nothing here. All checks run before anything is
 * written; a refusal changes nothing.
 */
export function adoptIssuer(deps: IssuerLifecycleDeps, spec: AdoptSpec, principal: string): Promise<Adopted> {
  checkProfiles(deps, spec.profiles ?? []);
  const now = (deps.clock ?? systemClock).now();
  const cert = parse(spec.certificate, 'the certificate');
  checkCa(cert.peculiar, 'the certificate', now);
  if (signedBy(cert.node, cert.node))
    throw refuse(
      'SelfSigned',
      `the certificate (${cert.peculiar.subject}) is self-signed, a root; ca adopt takes an intermediate: give the root with --trust and the intermediate it signed with --cert`,
    );
  const trust = spec.trust ? parse(spec.trust, 'the --trust certificate') : undefined;
  if (trust) {
    checkCa(trust.peculiar, 'the --trust certificate', now);
    if (!signedBy(trust.node, trust.node))
      throw refuse('NotARoot', `the --trust certificate (${trust.peculiar.subject}) is not a self-signed root`);
  }

  return change(deps, async (trx, rows) => {
    if (rows.some((r) => Buffer.from(r.certificate).equals(Buffer.from(spec.certificate))))
      throw new KeywardError('conflict', `the certificate (${cert.peculiar.subject}) is already an issuer`);
    await checkKey(trx, rows, spec.keyId, cert.peculiar);

    const signer = rows.find((r) => r.state !== 'retired' && signedBy(cert.node, new X509Certificate(r.certificate)));
    if (signer?.kind === 'intermediate')
      throw refuse(
        'NotUnderRoot',
        `the certificate was issued by intermediate ${signer.id}; ca adopt takes intermediates signed by a root`,
      );
    let parent = signer;
    let trustedRoot: IssuerRow | undefined;
    if (!parent && trust) {
      if (!signedBy(cert.node, trust.node))
        throw refuse(
          'UntrustedIssuer',
          `the certificate (issuer ${cert.peculiar.issuer}) is not signed by the --trust root (${trust.peculiar.subject})`,
        );
      parent = rows.find((r) => Buffer.from(r.certificate).equals(Buffer.from(spec.trust!)));
      if (parent?.state === 'retired')
        throw new KeywardError('conflict', `root ${parent.id} (${parent.subject}) is retired`);
      if (!parent) {
        checkPathLength(spec.trust!, trust.peculiar.subject);
        trustedRoot = await insertIssuer(trx, { kind: 'root', parentId: null, keyId: null, der: spec.trust! });
        await deps.kms.audit.append(trx, {
          principal,
          action: 'trust-root',
          keyId: null,
          outcome: 'success',
          context: { issuer: trustedRoot.id, subject: trustedRoot.subject, sha256: fingerprint(spec.trust!) },
        });
        parent = trustedRoot;
      }
    }
    if (!parent)
      throw refuse(
        'UntrustedIssuer',
        `the certificate was issued by ${cert.peculiar.issuer}, which is not a root this CA holds; give that root with --trust FILE`,
      );
    checkPathLength(parent.certificate, parent.subject);

    const issuer = await insertIssuer(trx, {
      kind: 'intermediate',
      parentId: parent.id,
      keyId: spec.keyId,
      der: spec.certificate,
      state: spec.activate ? 'active' : 'pending',
      profiles: spec.profiles ?? [],
    });
    await deps.kms.audit.append(trx, {
      principal,
      action: 'adopt-issuer',
      keyId: spec.keyId,
      outcome: 'success',
      context: {
        issuer: issuer.id,
        parent: parent.id,
        state: issuer.state,
        profiles: (spec.profiles ?? []).join(',') || '(default)',
        sha256: fingerprint(spec.certificate),
      },
    });
    return { issuer, ...(trustedRoot ? { trustedRoot } : {}) };
  });
}

function fingerprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}
