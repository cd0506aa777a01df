import { createHash } from 'node:crypto';

import { systemClock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { Db } from '../db/schema.ts';
import { prepareSubordinateCa } from './ca-builder.ts';
import { CertBuildError } from './cert-build-error.ts';
import type { NameConstraintsSpec } from './cert-extensions.ts';
import { currentRoot } from './chains.ts';
import { parseCsr } from './csr.ts';
import { recordBatch, reserveBatch } from './issue-writes.ts';
import { parseIssuerCertificate } from './issuer-certificate.ts';
import type { IssuerLifecycleDeps } from './issuer-lifecycle.ts';
import { issuerKey } from './issuers.ts';
import { caIssuersUrl, crlUrl } from './revocation-urls.ts';
import { randomSerial } from './serial.ts';

const BACKDATE_MS = 60_000;

/**
 * The profile name under which an intermediate our root signed for a key held elsewhere is
 * recorded in `certificates`: no configured profile has it, so nothing else issues under it.
 */
export const EXTERNAL_INTERMEDIATE = 'external-intermediate';

export interface SignIntermediateSpec {
  /** The CSR of the external CA's key, PEM or DER; its commonName names the intermediate. */
  csr: string | Uint8Array;
  lifetimeMs: number;
  nameConstraints?: NameConstraintsSpec;
  /** CA certificates allowed below it (RFC 5280 4.2.1.9); default 0. */
  pathLength?: number;
}

export interface SignedIntermediate {
  serial: string;
  rootId: string;
  der: Uint8Array;
  subject: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * `ca sign-intermediate`: the current root certifies a key held elsewhere (an HSM, another CA) as
 * an intermediate. Serial first, like a leaf: the TBS is reserved before the root signs, and the
 * certificate is recorded under the root (profile `external-intermediate`), so `keyward revoke`
 * withdraws it and the root's CRL lists it. The certificate points at the root's CRL and
 * certificate URLs; it is not an issuer here (we hold no key for it).
 */
export async function signIntermediate(
  deps: IssuerLifecycleDeps,
  spec: SignIntermediateSpec,
  principal: string,
  baseUrl: string,
): Promise<SignedIntermediate> {
  const csr = parseCsr(spec.csr);
  if (!csr.commonName)
    throw new KeywardError('badCSR', 'the CSR has no commonName; it names the intermediate (its subject CN)');
  const rows = await deps.registry.all();
  const root = currentRoot(rows);
  if (!root) throw new KeywardError('notInitialized', 'there is no active root to sign an intermediate');
  const spkiSha256 = createHash('sha256').update(csr.subjectPublicKeyInfo).digest();
  if (
    rows.some((r) =>
      createHash('sha256')
        .update(parseIssuerCertificate(r.certificate).subjectPublicKeyInfo)
        .digest()
        .equals(spkiSha256),
    )
  )
    throw new KeywardError('conflict', "the CSR's key is already one of this CA's issuers");

  const now = (deps.clock ?? systemClock).now();
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const notAfter = new Date(Math.min(now.getTime() + spec.lifetimeMs, root.not_after.getTime()));
  if (notAfter.getTime() <= now.getTime() + 86_400_000)
    throw new KeywardError(
      'conflict',
      `root ${root.id} expires at ${root.not_after.toISOString()}; rotate the root first`,
    );
  const serial = randomSerial();
  const signer = await deps.kms.signer(issuerKey(root), 'sign-certificate', principal);
  let prepared: ReturnType<typeof prepareSubordinateCa>;
  try {
    prepared = prepareSubordinateCa(
      {
        serial: Buffer.from(serial, 'hex'),
        notBefore,
        notAfter,
        subject: { commonName: csr.commonName, organization: deps.organization },
        subjectPublicKeyInfo: csr.subjectPublicKeyInfo,
        pathLength: spec.pathLength ?? 0,
        nameConstraints: spec.nameConstraints,
        crlDistributionPoint: crlUrl(baseUrl, root.id, 0),
        caIssuersUrl: caIssuersUrl(baseUrl, root.id),
      },
      { certificate: root.certificate, signer },
    );
  } catch (err) {
    // The builder's refusals (path length, a key it can't use) are the operator's to fix.
    if (err instanceof CertBuildError) throw new KeywardError('malformed', err.message);
    throw err;
  }

  const [reserved] = await reserveBatch(deps.db, [
    {
      serial,
      issuerId: root.id,
      profile: EXTERNAL_INTERMEDIATE,
      requester: principal,
      request: JSON.stringify({
        tbs: Buffer.from(prepared.tbs).toString('base64'),
        spkiSha256: spkiSha256.toString('hex'),
      }),
      spkiSha256,
    },
  ]);
  if (!reserved)
    throw new KeywardError(
      'badPublicKey',
      'this public key belongs to a certificate revoked for keyCompromise and may not be certified again',
    );
  let der: Uint8Array;
  try {
    // No `profile` in the context: a root key's policy refuses leaf profiles.
    der = await prepared.sign({ serial, kind: EXTERNAL_INTERMEDIATE });
  } catch (err) {
    await deps.db
      .updateTable('serial_reservations')
      .set({ status: 'abandoned' })
      .where('serial', '=', serial)
      .execute();
    throw err;
  }
  await deps.db.transaction().execute(async (trx) => {
    await recordBatch(trx, [
      {
        serial,
        issuerId: root.id,
        der,
        commonName: csr.commonName ?? null,
        sans: JSON.stringify({ dns: [], ip: [], uri: [], email: [] }),
        notBefore,
        notAfter,
        profile: EXTERNAL_INTERMEDIATE,
        spkiSha256,
        requester: principal,
        crlShard: 0,
      },
    ]);
    await deps.kms.audit.append(trx, {
      principal,
      action: 'sign-intermediate',
      keyId: root.key_id,
      outcome: 'success',
      context: { serial, root: root.id, subject: csr.commonName ?? '', pathLength: spec.pathLength ?? 0 },
    });
  });
  return {
    serial,
    rootId: root.id,
    der,
    subject: `O=${deps.organization}, CN=${csr.commonName}`,
    notBefore,
    notAfter,
  };
}

/** An intermediate our root signed for a key held elsewhere, as `ca issuers` lists it. */
export interface ExternalIntermediate {
  serial: string;
  rootId: string;
  commonName: string | null;
  der: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  status: string;
}

export async function externalIntermediates(db: Db): Promise<ExternalIntermediate[]> {
  const rows = await db
    .selectFrom('certificates')
    .select(['serial', 'issuer_id', 'common_name', 'der', 'not_before', 'not_after', 'status'])
    .where('profile', '=', EXTERNAL_INTERMEDIATE)
    .orderBy('created_at')
    .execute();
  return rows.map((r) => ({
    serial: r.serial,
    rootId: r.issuer_id,
    commonName: r.common_name,
    der: r.der,
    notBefore: r.not_before,
    notAfter: r.not_after,
    status: r.status,
  }));
}
