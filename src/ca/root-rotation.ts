import type { CaKeyType } from '../config/schema.ts';
import { systemClock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { CrossCertificateRow, IssuerRow } from '../db/schema.ts';
import { insertIssuer } from './authority.ts';
import { buildSelfSignedCa } from './ca-builder.ts';
import { currentRoot } from './chains.ts';
import { crossCertify, ROOT_PATH_LENGTH, subjectNameOf } from './cross-certificates.ts';
import { change, type IssuerLifecycleDeps, setState } from './issuer-lifecycle.ts';
import { announceIssuerChange, issuerKey } from './issuers.ts';
import { randomSerial } from './serial.ts';

const BACKDATE_MS = 60_000;

export interface RootSpec {
  keyType?: CaKeyType;
  lifetimeMs?: number;
  commonName?: string;
  protection?: 'wrapped' | 'hsm';
}

export interface RootRotation {
  old: IssuerRow;
  new: IssuerRow;
  /** The new root certified by the old one, and the old by the new. */
  crossCertificates: CrossCertificateRow[];
}

/** A name no other root has, so path building never confuses the two roots. */
function freshName(rows: IssuerRow[], base: string, year: number): string {
  const taken = new Set(rows.filter((r) => r.kind === 'root').map((r) => subjectNameOf(r.certificate).commonName));
  for (let n = 1; ; n++) {
    const name = n === 1 ? `${base} ${year}` : `${base} ${year}-${n}`;
    if (!taken.has(name)) return name;
  }
}

/**
 * `ca rotate-root`: a new root, and each root certifies the other, so a client that trusts only the
 * old root validates leaves under the new one and the reverse. The new root becomes the current
 * one (new intermediates go under it; ACME serves chains to it first); the old one turns
 * `retiring` and stays in /roots.pem and the trust bundle until it is retired.
 */
export function rotateRoot(deps: IssuerLifecycleDeps, spec: RootSpec, principal: string): Promise<RootRotation> {
  return change(deps, async (trx, rows) => {
    const old = currentRoot(rows);
    if (!old) throw new KeywardError('notInitialized', 'there is no active root to roll over');
    const oldKey = await trx
      .selectFrom('kms_keys')
      .select(['alg', 'backend'])
      .where('id', '=', issuerKey(old))
      .executeTakeFirstOrThrow();
    const now = (deps.clock ?? systemClock).now();
    const lifetime = spec.lifetimeMs ?? old.not_after.getTime() - old.not_before.getTime();
    const oldName = subjectNameOf(old.certificate);
    const subject = {
      commonName:
        spec.commonName ?? freshName(rows, oldName.commonName.replace(/ \d{4}(-\d+)?$/, ''), now.getUTCFullYear()),
      organization: deps.organization,
    };
    const key = await deps.kms.createKey(trx, {
      usage: 'root-ca',
      alg: spec.keyType ?? (oldKey.alg as CaKeyType),
      principal,
      protection: spec.protection ?? oldKey.backend,
    });
    const newSigner = await deps.kms.signer(key.id, 'sign-certificate', principal, trx);
    const der = await buildSelfSignedCa(
      {
        serial: Buffer.from(randomSerial(), 'hex'),
        notBefore: new Date(now.getTime() - BACKDATE_MS),
        notAfter: new Date(now.getTime() + lifetime),
        subject,
        subjectPublicKeyInfo: newSigner.spki,
        pathLength: ROOT_PATH_LENGTH,
      },
      newSigner,
    );
    const made = await insertIssuer(trx, { kind: 'root', parentId: null, keyId: key.id, der, replaces: old.id });
    const oldSigner = await deps.kms.signer(issuerKey(old), 'sign-certificate', principal, trx);
    const crossCertificates = [
      await crossCertify(trx, made, old, oldSigner, now),
      await crossCertify(trx, old, made, newSigner, now),
    ];
    await announceIssuerChange(trx, made.id);
    const retiring = await setState(deps, trx, old, 'retiring', principal);
    await deps.kms.audit.append(trx, {
      principal,
      action: 'rotate-root',
      keyId: key.id,
      outcome: 'success',
      context: { issuer: made.id, replaces: old.id, crossCertificates: crossCertificates.map((x) => x.id).join(',') },
    });
    return { old: retiring, new: made, crossCertificates };
  });
}
