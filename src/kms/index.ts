import { randomUUID } from 'node:crypto';

import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import { CA_KEK, type HsmSettings, KeyHierarchy } from './hierarchy.ts';
import { insertRoot } from './hierarchy-rows.ts';
import { loadAwsKmsRoot } from './roots/awskms.ts';
import { createFileRoot, loadFileRoot } from './roots/file.ts';
import { createPassphraseRoot, loadPassphraseRoot } from './roots/passphrase.ts';
import { loadPkcs11Root } from './roots/pkcs11.ts';
import { createSharesRoot } from './roots/shares.ts';
import type { RootOfTrust, RootRecord } from './roots/types.ts';
import { type DeliveredShares, deliverShares, type ShareDelivery } from './share-files.ts';
import { sealedRoot } from './unseal.ts';

export { type Attached, type AttachedWrites, type AuditEvent, AuditLog, type AuditVerification } from './audit.ts';
export { KmsError } from './errors.ts';
export { CA_KEK, type HsmSettings, KeyHierarchy } from './hierarchy.ts';
export type { AsymmetricAlg } from './key-types.ts';
export type { DeliveredShares, ShareDelivery } from './share-files.ts';
export type { AuthorizedSignature, SignatureAlgorithm, SignContext, Signer } from './signer.ts';
export type { UnsealStatus } from './unseal.ts';

export type RootOfTrustOptions =
  | { type: 'file'; path: string }
  | { type: 'passphrase'; passphrase: string | undefined }
  | { type: 'shares'; threshold: number; count: number };

function passphraseOf(options: Extract<RootOfTrustOptions, { type: 'passphrase' }>): string {
  if (options.passphrase === undefined) {
    throw new KmsError(
      'KeyUnavailable',
      'the root of trust is a passphrase, but none was given (set KEYWARD_PASSPHRASE or run in a terminal to be asked)',
    );
  }
  return options.passphrase;
}

async function installId(db: Db): Promise<string> {
  await db
    .insertInto('installation')
    .values({ id: 1, install_id: randomUUID() })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
  const row = await db.selectFrom('installation').select('install_id').where('id', '=', 1).executeTakeFirstOrThrow();
  return row.install_id;
}

const NO_ROOT = '00000000-0000-0000-0000-000000000000';
const NO_ROOT_YET =
  'there is no root of trust yet: rootOfTrust is "shares", so run keyward init, which makes the root and hands out its shares';

/** True when the configuration wants a shares root that `keyward init` has not made yet. */
export function awaitingSharesRoot(kms: KeyHierarchy): boolean {
  return kms.rootId === NO_ROOT;
}

/**
 * Makes a shares root of trust and the CA KEK (`keyward init` with rootOfTrust "shares"). The
 * shares are written (or returned) before the root's row commits, so a crash can't leave a root
 * whose shares nobody received. Two processes can't both make one (advisory lock).
 */
export async function createSharesRootOfTrust(
  kms: KeyHierarchy,
  db: Db,
  options: { threshold: number; count: number },
  delivery: ShareDelivery,
  principal: string,
): Promise<DeliveredShares> {
  const id = randomUUID();
  const created = await createSharesRoot(id, options.threshold, options.count);
  const set = created.record.params as { setId: string };
  // The audit chain key is made under the new root, in the transaction that records it.
  kms.useRoot(created.root);
  const delivered = await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext('keyward:root-init'))`.execute(trx);
    const existing = await trx.selectFrom('kms_roots').select('id').where('state', '=', 'Enabled').executeTakeFirst();
    if (existing) throw new KmsError('InvalidState', `root of trust ${existing.id} exists already`);
    const out = deliverShares({ ...options, setId: set.setId, shares: created.shares }, delivery);
    await insertRoot(trx, created.record, 'Enabled');
    await kms.openAudit(trx, principal);
    await kms.audit.append(trx, {
      principal,
      action: 'create-root',
      keyId: id,
      outcome: 'success',
      context: { provider: 'shares', threshold: options.threshold, shares: options.count, set: set.setId },
    });
    return out;
  });
  await kms.ensureKek(db, CA_KEK, 'ca-keys', principal);
  return delivered;
}

/**
 * Opens the key hierarchy: loads the active root of trust named in the database, or creates the
 * root and the CA KEK on first use. Refuses a root whose key does not match the stored check value.
 */
export async function openKeyHierarchy(
  db: Db,
  options: RootOfTrustOptions,
  principal = 'keyward',
  hsm?: HsmSettings,
): Promise<KeyHierarchy> {
  const install = await installId(db);
  const stored = await db
    .selectFrom('kms_roots')
    .selectAll()
    .where('state', '=', 'Enabled')
    .where('retired_at', 'is', null)
    .executeTakeFirst();
  let hierarchy: KeyHierarchy;
  if (stored) {
    const record: RootRecord = {
      id: stored.id,
      provider: stored.provider,
      params: stored.params as Record<string, unknown>,
      kcv: stored.kcv,
    };
    let root: RootOfTrust;
    if (record.provider === 'pkcs11') {
      // Token and AWS KMS roots are fully described by its stored, non-secret parameters (module, token and
      // key labels, PIN file path; key ARN), so they need no setting in rootOfTrust: see docs for rotate-root.
      root = await loadPkcs11Root(record);
    } else if (record.provider === 'awskms') {
      root = loadAwsKmsRoot(record);
    } else if (record.provider !== options.type) {
      throw new KmsError(
        'WrongRootKey',
        `the database's root of trust ${record.id} is "${record.provider}", but the configuration says "${options.type}"`,
      );
    } else if (options.type === 'shares') {
      // Sealed until `keyward unseal` has the threshold of shares; the KEKs (and the audit chain
      // key) exist already and are unwrapped only then.
      const sealed = new KeyHierarchy(db, sealedRoot(record.id, ''), install, hsm);
      sealed.seal(record.id);
      return sealed;
    } else {
      root =
        options.type === 'file'
          ? loadFileRoot(record, options.path)
          : loadPassphraseRoot(record, passphraseOf(options));
    }
    hierarchy = new KeyHierarchy(db, root, install, hsm);
    await hierarchy.openAudit(db, principal);
  } else if (options.type === 'shares') {
    // The shares must be handed out when the root is made, so only `keyward init` makes it.
    return new KeyHierarchy(db, sealedRoot(NO_ROOT, NO_ROOT_YET), install, hsm);
  } else {
    const id = randomUUID();
    const created =
      options.type === 'file' ? createFileRoot(id, options.path) : createPassphraseRoot(id, passphraseOf(options));
    hierarchy = new KeyHierarchy(db, created.root, install, hsm);
    // The root, the audit chain key it wraps and the root's own audit event commit together.
    await db.transaction().execute(async (trx) => {
      await insertRoot(trx, created.record, 'Enabled');
      await hierarchy.openAudit(trx, principal);
      await hierarchy.audit.append(trx, {
        principal,
        action: 'create-root',
        keyId: id,
        outcome: 'success',
        context: { provider: created.record.provider },
      });
    });
  }
  await hierarchy.ensureKek(db, CA_KEK, 'ca-keys', principal);
  return hierarchy;
}
