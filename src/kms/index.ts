import { randomUUID } from 'node:crypto';

import type { Db } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import { CA_KEK, type HsmSettings, KeyHierarchy } from './hierarchy.ts';
import { loadAwsKmsRoot } from './roots/awskms.ts';
import { createFileRoot, loadFileRoot } from './roots/file.ts';
import { createPassphraseRoot, loadPassphraseRoot } from './roots/passphrase.ts';
import { loadPkcs11Root } from './roots/pkcs11.ts';
import type { RootOfTrust, RootRecord } from './roots/types.ts';

export { type AuditEvent, AuditLog, type AuditVerification } from './audit.ts';
export { KmsError } from './errors.ts';
export { CA_KEK, type HsmSettings, KeyHierarchy } from './hierarchy.ts';
export type { AsymmetricAlg } from './key-types.ts';
export type { SignatureAlgorithm, SignContext, Signer } from './signer.ts';

export type RootOfTrustOptions =
  { type: 'file'; path: string } | { type: 'passphrase'; passphrase: string | undefined };

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
    } else {
      root =
        options.type === 'file'
          ? loadFileRoot(record, options.path)
          : loadPassphraseRoot(record, passphraseOf(options));
    }
    hierarchy = new KeyHierarchy(db, root, install, hsm);
    await hierarchy.openAudit(db, principal);
  } else {
    const id = randomUUID();
    const created =
      options.type === 'file' ? createFileRoot(id, options.path) : createPassphraseRoot(id, passphraseOf(options));
    hierarchy = new KeyHierarchy(db, created.root, install, hsm);
    // The root, the audit chain key it wraps and the root's own audit event commit together.
    await db.transaction().execute(async (trx) => {
      await trx
        .insertInto('kms_roots')
        .values({
          id,
          provider: created.record.provider,
          params: JSON.stringify(created.record.params),
          kcv: created.record.kcv,
          retired_at: null,
        })
        .execute();
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
