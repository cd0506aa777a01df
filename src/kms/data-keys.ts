import { randomBytes } from 'node:crypto';

import { sql } from 'kysely';

import type { Db, Executor } from '../db/schema.ts';
import { open, parseHeader, PURPOSE, seal } from './container.ts';
import type { EncryptionContext } from './encryption-context.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { defaultDataKeyPolicy, evaluate, type KeyAction, parsePolicy } from './key-policy.ts';

// The envelope data-key API (as AWS KMS GenerateDataKey / Decrypt). Ciphertexts are KWE1 purpose 0x04 under a version of
// an app-data KEK; the header names KEK and version, so rotation never breaks decrypt.

export const MAX_PLAINTEXT = 4096;

export interface DataKeyResult {
  keyId: string;
  keyVersion: number;
  plaintext?: Buffer;
  ciphertextBlob: Buffer;
}

interface KekRow {
  id: string;
  name: string;
  primary: number;
}

function appContext(kekId: string, context: EncryptionContext): Record<string, string> {
  for (const k of Object.keys(context)) {
    if (k.startsWith('kw:'))
      throw new KmsError('InvalidInput', `encryption context keys starting with "kw:" are reserved (${k})`);
  }
  return { ...context, 'kw:key': kekId };
}

export class DataKeys {
  constructor(
    private readonly kms: KeyHierarchy,
    private readonly db: Db,
  ) {}

  /** Creates an app-data KEK; with no principals its policy denies everyone until put-policy. */
  async createKey(name: string, principals: string[], principal: string): Promise<{ id: string; name: string }> {
    if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name))
      throw new KmsError('InvalidInput', 'a key name is 1-63 of a-z 0-9 . _ - and starts with a letter or digit');
    const exists = await this.db.selectFrom('kms_keks').select('id').where('name', '=', name).executeTakeFirst();
    if (exists) throw new KmsError('InvalidInput', `a KEK named "${name}" already exists`);
    const id = await this.kms.ensureKek(this.db, name, 'app-data', principal);
    await this.db
      .updateTable('kms_keks')
      .set({ policy: JSON.stringify(defaultDataKeyPolicy(principals)) })
      .where('id', '=', id)
      .execute();
    return { id, name };
  }

  private async findKek(keyId: string): Promise<KekRow> {
    const row = await this.db
      .selectFrom('kms_keks')
      .innerJoin('kms_kek_versions', (j) =>
        j.onRef('kms_kek_versions.kek_id', '=', 'kms_keks.id').on('kms_kek_versions.is_primary', '=', true),
      )
      .select(['kms_keks.id', 'kms_keks.name', 'kms_keks.purpose', 'kms_kek_versions.version'])
      .where((eb) => (/^[0-9a-f-]{36}$/i.test(keyId) ? eb('kms_keks.id', '=', keyId) : eb('kms_keks.name', '=', keyId)))
      .executeTakeFirst();
    if (!row || row.purpose !== 'app-data') throw new KmsError('NotFound', `no data key "${keyId}"`);
    return { id: row.id, name: row.name, primary: row.version };
  }

  /**
   * Checks state and policy from the database and writes the audit event in the same transaction
   * as the use count (fail-closed). A refusal is audited in its own transaction.
   */
  private async authorize<T>(
    kekId: string,
    version: number,
    principal: string,
    actions: KeyAction[],
    context: EncryptionContext,
    auditContext: Record<string, string | number | boolean | null>,
    fn: (trx: Executor) => Promise<T>,
  ): Promise<T> {
    const action = actions.join('+');
    try {
      return await this.db.transaction().execute(async (trx) => {
        const kek = await trx
          .updateTable('kms_keks')
          .set((eb) => ({ use_count: eb('use_count', '+', 1) }))
          .where('id', '=', kekId)
          .returning(['state', 'policy', 'min_unwrap_version', 'name'])
          .executeTakeFirstOrThrow();
        if (kek.state !== 'Enabled') throw new KmsError('KeyDisabled', `data key ${kek.name} is ${kek.state}`);
        const v = await trx
          .updateTable('kms_kek_versions')
          .set({ last_used_at: sql<Date>`now()` as never })
          .where('kek_id', '=', kekId)
          .where('version', '=', version)
          .returning(['state'])
          .executeTakeFirst();
        if (!v) throw new KmsError('NotFound', `data key ${kek.name} has no version ${version}`);
        if (v.state !== 'Enabled' || version < kek.min_unwrap_version)
          throw new KmsError(
            'KeyDisabled',
            `data key ${kek.name} version ${version} is ${v.state === 'Enabled' ? 'below the minimum unwrap version' : v.state}`,
          );
        const policy = kek.policy
          ? parsePolicy(typeof kek.policy === 'string' ? JSON.parse(kek.policy) : kek.policy)
          : defaultDataKeyPolicy([]);
        for (const a of actions) {
          const d = evaluate(policy, { principal, action: a, context });
          if (!d.allowed) throw new KmsError('AccessDenied', `data key ${kek.name}: ${d.reason}`);
        }
        const result = await fn(trx);
        await this.kms.audit.append(trx, {
          principal,
          action,
          keyId: kekId,
          keyVersion: version,
          outcome: 'success',
          context: { ...auditContext, ...prefixed(context) },
        });
        return result;
      });
    } catch (err) {
      const denied = err instanceof KmsError && (err.code === 'AccessDenied' || err.code === 'KeyDisabled');
      await this.kms.audit.append(this.db, {
        principal,
        action,
        keyId: kekId,
        keyVersion: version,
        outcome: denied ? 'denied' : 'failure',
        errorCode: err instanceof KmsError ? err.code : 'InternalError',
        context: { ...auditContext, ...prefixed(context) },
      });
      throw err;
    }
  }

  async generateDataKey(
    req: {
      keyId: string;
      keySpec?: 'AES_256' | 'AES_128';
      encryptionContext?: EncryptionContext;
      withoutPlaintext?: boolean;
    },
    principal: string,
  ): Promise<DataKeyResult> {
    const kek = await this.findKek(req.keyId);
    const spec = req.keySpec ?? 'AES_256';
    if (spec !== 'AES_256' && spec !== 'AES_128')
      throw new KmsError('InvalidInput', 'keySpec must be AES_256 or AES_128');
    const context = req.encryptionContext ?? {};
    const aad = appContext(kek.id, context);
    return this.authorize(
      kek.id,
      kek.primary,
      principal,
      ['generate-data-key'],
      context,
      { key_spec: spec, plaintext_returned: !req.withoutPlaintext },
      async (trx) => {
        const key = await this.kms.kek(kek.id, kek.primary, trx);
        const plaintext = randomBytes(spec === 'AES_256' ? 32 : 16);
        const ciphertextBlob = seal(
          key,
          { purpose: PURPOSE.appData, keyId: kek.id, version: kek.primary },
          aad,
          plaintext,
        );
        if (req.withoutPlaintext) {
          plaintext.fill(0);
          return { keyId: kek.id, keyVersion: kek.primary, ciphertextBlob };
        }
        return { keyId: kek.id, keyVersion: kek.primary, plaintext, ciphertextBlob };
      },
    );
  }

  async encrypt(
    req: { keyId: string; plaintext: Buffer; encryptionContext?: EncryptionContext },
    principal: string,
  ): Promise<DataKeyResult> {
    if (req.plaintext.length > MAX_PLAINTEXT)
      throw new KmsError('InvalidInput', `plaintext is larger than ${MAX_PLAINTEXT} bytes; encrypt a data key instead`);
    const kek = await this.findKek(req.keyId);
    const context = req.encryptionContext ?? {};
    const aad = appContext(kek.id, context);
    return this.authorize(
      kek.id,
      kek.primary,
      principal,
      ['encrypt'],
      context,
      { bytes: req.plaintext.length },
      async (trx) => {
        const key = await this.kms.kek(kek.id, kek.primary, trx);
        return {
          keyId: kek.id,
          keyVersion: kek.primary,
          ciphertextBlob: seal(
            key,
            { purpose: PURPOSE.appData, keyId: kek.id, version: kek.primary },
            aad,
            req.plaintext,
          ),
        };
      },
    );
  }

  async decrypt(
    req: { ciphertextBlob: Buffer; encryptionContext?: EncryptionContext; keyId?: string },
    principal: string,
  ): Promise<{ keyId: string; keyVersion: number; plaintext: Buffer }> {
    const header = parseHeader(req.ciphertextBlob);
    if (header.purpose !== PURPOSE.appData)
      throw new KmsError('InvalidCiphertext', 'the ciphertext is not a Keyward data ciphertext');
    const kek = await this.findKek(header.keyId);
    if (req.keyId !== undefined && req.keyId !== kek.id && req.keyId !== kek.name) {
      throw new KmsError('InvalidCiphertext', `the ciphertext belongs to key ${kek.name}, not ${req.keyId}`);
    }
    const context = req.encryptionContext ?? {};
    const aad = appContext(kek.id, context);
    return this.authorize(kek.id, header.version, principal, ['decrypt'], context, {}, async (trx) => {
      const key = await this.kms.kek(kek.id, header.version, trx);
      const plaintext = open(
        key,
        req.ciphertextBlob,
        { purpose: PURPOSE.appData, keyId: kek.id, version: header.version },
        aad,
      );
      return { keyId: kek.id, keyVersion: header.version, plaintext };
    });
  }

  /** Decrypt under the source key and encrypt under the destination; needs both re-encrypt actions. */
  async reEncrypt(
    req: {
      ciphertextBlob: Buffer;
      sourceEncryptionContext?: EncryptionContext;
      destinationKeyId: string;
      destinationEncryptionContext?: EncryptionContext;
    },
    principal: string,
  ): Promise<DataKeyResult & { sourceKeyId: string; sourceKeyVersion: number }> {
    const header = parseHeader(req.ciphertextBlob);
    if (header.purpose !== PURPOSE.appData)
      throw new KmsError('InvalidCiphertext', 'the ciphertext is not a Keyward data ciphertext');
    const src = await this.findKek(header.keyId);
    const dst = await this.findKek(req.destinationKeyId);
    const srcCtx = req.sourceEncryptionContext ?? {};
    const dstCtx = req.destinationEncryptionContext ?? {};
    const plaintext = await this.authorize(
      src.id,
      header.version,
      principal,
      ['re-encrypt-from'],
      srcCtx,
      { destination: dst.id },
      async (trx) => {
        const key = await this.kms.kek(src.id, header.version, trx);
        return open(
          key,
          req.ciphertextBlob,
          { purpose: PURPOSE.appData, keyId: src.id, version: header.version },
          appContext(src.id, srcCtx),
        );
      },
    );
    try {
      return await this.authorize(
        dst.id,
        dst.primary,
        principal,
        ['re-encrypt-to'],
        dstCtx,
        { source: src.id, source_version: header.version },
        async (trx) => {
          const key = await this.kms.kek(dst.id, dst.primary, trx);
          const ciphertextBlob = seal(
            key,
            { purpose: PURPOSE.appData, keyId: dst.id, version: dst.primary },
            appContext(dst.id, dstCtx),
            plaintext,
          );
          return {
            keyId: dst.id,
            keyVersion: dst.primary,
            ciphertextBlob,
            sourceKeyId: src.id,
            sourceKeyVersion: header.version,
          };
        },
      );
    } finally {
      plaintext.fill(0);
    }
  }
}

/** Encryption contexts are logged in clear (they must hold no secrets), under an "ec:" prefix. */
function prefixed(context: EncryptionContext): Record<string, string> {
  return Object.fromEntries(Object.entries(context).map(([k, v]) => [`ec:${k}`, v]));
}
