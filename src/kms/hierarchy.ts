import {
  createHash,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  type KeyObject,
  randomBytes,
  randomUUID,
  timingSafeEqual,
} from 'node:crypto';

import { GroupCommit } from '../db/group-commit.ts';
import type { Executor, KeyUsage } from '../db/schema.ts';
import { appendAudit, inTransaction } from './audit.ts';
import { open, PURPOSE, seal } from './container.ts';
import { KmsError } from './errors.ts';
import { algOf, type AsymmetricAlg, generateKeyPair } from './key-types.ts';
import { effectivePolicy, evaluate } from './policy.ts';
import type { RootOfTrust } from './roots/types.ts';
import { signatureAlgorithmFor, type SignContext, type Signer, signWithKeyObject } from './signer.ts';

export const CA_KEK = 'ca-keys';

export type SignOperation = 'sign-certificate' | 'sign-crl' | 'sign-ocsp' | 'sign-audit-checkpoint' | 'sign-token';

interface CachedKey {
  key: KeyObject;
  alg: AsymmetricAlg;
  kekVersion: number;
}

/**
 * Levels 1 and 2 of the key hierarchy: KEK versions wrapped by the root of trust, and one DEK per
 * asymmetric key wrapped by a KEK version. Plaintext keys exist only as KeyObjects in this process.
 */
export class KeyHierarchy {
  private readonly keks = new Map<string, KeyObject>();
  private readonly keys = new Map<string, CachedKey>();
  private readonly uses: GroupCommit<string, void>;

  constructor(
    private readonly db: Executor,
    private root: RootOfTrust,
    private readonly installId: string,
  ) {
    this.uses = new GroupCommit((keyIds) => this.countUses(keyIds));
  }

  /** One update per key for a whole batch of signatures. */
  private async countUses(keyIds: string[]): Promise<void[]> {
    const counts = new Map<string, number>();
    for (const id of keyIds) counts.set(id, (counts.get(id) ?? 0) + 1);
    for (const [id, n] of counts) {
      await this.db
        .updateTable('kms_keys')
        .set((eb) => ({ use_count: eb('use_count', '+', n) }))
        .where('id', '=', id)
        .execute();
    }
    return keyIds.map(() => undefined);
  }

  get rootId(): string {
    return this.root.id;
  }

  get rootOfTrust(): RootOfTrust {
    return this.root;
  }

  get installation(): string {
    return this.installId;
  }

  /** After rotate-root has committed: later unwraps use the new root (cached KEKs stay valid). */
  useRoot(root: RootOfTrust): void {
    this.root = root;
  }

  /** Drops cached plaintext for a KEK version or key whose material was destroyed or re-wrapped. */
  forget(kekId: string, version?: number): void {
    for (const k of [...this.keks.keys()])
      if (k === `${kekId}/${version}` || (version === undefined && k.startsWith(`${kekId}/`))) this.keks.delete(k);
    this.keys.delete(kekId);
  }

  /** Wraps new KEK material under the current root (rotation). */
  wrapKekMaterial(material: Buffer, kekId: string, version: number): Promise<Buffer> {
    return this.root.wrapKek(material, { kekId, version, installId: this.installId });
  }

  /** Remembers freshly generated KEK material so the creating process needs no round trip. */
  cacheKek(kekId: string, version: number, material: Buffer): void {
    this.keks.set(`${kekId}/${version}`, createSecretKey(material));
  }

  /** Creates a KEK with version 1 as primary; a no-op when it exists. */
  async ensureKek(
    db: Executor,
    name: string,
    purpose: 'ca-keys' | 'app-data' | 'import',
    principal: string,
  ): Promise<string> {
    const existing = await db.selectFrom('kms_keks').select('id').where('name', '=', name).executeTakeFirst();
    if (existing) return existing.id;
    const id = randomUUID();
    const material = randomBytes(32);
    try {
      const wrapped = await this.root.wrapKek(material, { kekId: id, version: 1, installId: this.installId });
      await inTransaction(db, async (trx) => {
        await trx.insertInto('kms_keks').values({ id, name, purpose, auto_rotate_days: null }).execute();
        await trx
          .insertInto('kms_kek_versions')
          .values({
            kek_id: id,
            version: 1,
            is_primary: true,
            root_id: this.root.id,
            wrapped,
            next_root_id: null,
            next_wrapped: null,
            last_used_at: null,
            deletion_at: null,
            destroyed_at: null,
          })
          .execute();
        await appendAudit(trx, {
          principal,
          action: 'create-kek',
          keyId: id,
          keyVersion: 1,
          outcome: 'success',
          context: { name, purpose },
        });
      });
      this.keks.set(`${id}/1`, createSecretKey(material));
    } finally {
      material.fill(0);
    }
    return id;
  }

  /**
   * The plaintext of one KEK version (cached per process). The version's state and root are checked
   * when it is first unwrapped; callers that need a per-use check read the state themselves.
   */
  async kek(kekId: string, version: number, db: Executor = this.db): Promise<KeyObject> {
    const cacheKey = `${kekId}/${version}`;
    const cached = this.keks.get(cacheKey);
    if (cached) return cached;
    const row = await db
      .selectFrom('kms_kek_versions')
      .select(['wrapped', 'state', 'root_id'])
      .where('kek_id', '=', kekId)
      .where('version', '=', version)
      .executeTakeFirst();
    if (!row) throw new KmsError('NotFound', `KEK ${kekId} has no version ${version}`);
    if (row.state !== 'Enabled') throw new KmsError('KeyDisabled', `KEK ${kekId} version ${version} is ${row.state}`);
    if (row.root_id !== this.root.id)
      throw new KmsError(
        'WrongRootKey',
        `KEK ${kekId} v${version} is wrapped by root ${row.root_id}, not ${this.root.id}`,
      );
    const material = await this.root.unwrapKek(row.wrapped, { kekId, version, installId: this.installId });
    const key = createSecretKey(material);
    material.fill(0);
    this.keks.set(cacheKey, key);
    return key;
  }

  async primaryKek(db: Executor, name: string): Promise<{ id: string; version: number; key: KeyObject }> {
    const row = await db
      .selectFrom('kms_keks')
      .innerJoin('kms_kek_versions', 'kms_kek_versions.kek_id', 'kms_keks.id')
      .select(['kms_keks.id', 'kms_kek_versions.version'])
      .where('kms_keks.name', '=', name)
      .where('kms_kek_versions.is_primary', '=', true)
      .executeTakeFirst();
    if (!row) throw new KmsError('NotFound', `KEK "${name}" does not exist`);
    return { id: row.id, version: row.version, key: await this.kek(row.id, row.version, db) };
  }

  /** Generates an asymmetric key and stores it wrapped (envelope encryption) in the caller's unit of work. */
  async createKey(
    db: Executor,
    opts: { usage: KeyUsage; alg: AsymmetricAlg; principal: string },
  ): Promise<{ id: string; publicKey: KeyObject }> {
    const { privateKey, publicKey } = generateKeyPair(opts.alg);
    const id = await this.storeKey(db, {
      usage: opts.usage,
      privateKey,
      principal: opts.principal,
      action: 'create-key',
    });
    return { id, publicKey };
  }

  /** Wraps an existing private key like a generated one (bring your own key). */
  async storeKey(
    db: Executor,
    opts: {
      usage: KeyUsage;
      privateKey: KeyObject;
      principal: string;
      action: string;
      id?: string;
      context?: Record<string, string>;
    },
  ): Promise<string> {
    const id = opts.id ?? randomUUID();
    const alg = algOf(opts.privateKey);
    const spki = createPublicKey(opts.privateKey).export({ type: 'spki', format: 'der' });
    const spkiSha256 = createHash('sha256').update(spki).digest();
    const kek = await this.primaryKek(db, CA_KEK);
    const dek = randomBytes(32);
    const pkcs8 = opts.privateKey.export({ type: 'pkcs8', format: 'der' });
    try {
      const keyCiphertext = seal(
        createSecretKey(dek),
        { purpose: PURPOSE.privateKey, keyId: id, version: 1 },
        privateKeyContext(id, alg, spkiSha256),
        pkcs8,
      );
      const dekWrapped = seal(
        kek.key,
        { purpose: PURPOSE.dek, keyId: kek.id, version: kek.version },
        dekContext(id, opts.usage),
        dek,
      );
      await inTransaction(db, async (trx) => {
        await trx
          .insertInto('kms_keys')
          .values({
            id,
            usage: opts.usage,
            alg,
            spki_sha256: spkiSha256,
            policy: null,
            kek_id: kek.id,
            kek_version: kek.version,
            dek_wrapped: dekWrapped,
            key_ciphertext: keyCiphertext,
            external_ref: null,
            deletion_at: null,
            destroyed_at: null,
          })
          .execute();
        await appendAudit(trx, {
          principal: opts.principal,
          action: opts.action,
          keyId: id,
          keyVersion: kek.version,
          outcome: 'success',
          context: { ...opts.context, usage: opts.usage, alg, spki_sha256: spkiSha256.toString('hex') },
        });
      });
    } finally {
      dek.fill(0);
      pkcs8.fill(0);
    }
    this.keys.set(id, { key: opts.privateKey, alg, kekVersion: kek.version });
    return id;
  }

  /** Unwraps a key into memory (once per process), checking every layer's binding. */
  private async privateKey(keyId: string, principal: string, db: Executor): Promise<CachedKey> {
    const cached = this.keys.get(keyId);
    if (cached) return cached;
    const row = await db.selectFrom('kms_keys').selectAll().where('id', '=', keyId).executeTakeFirst();
    if (!row) throw new KmsError('NotFound', `key ${keyId} does not exist`);
    if (row.state !== 'Enabled') throw new KmsError('KeyDisabled', `key ${keyId} (${row.usage}) is ${row.state}`);
    const decision = evaluate(effectivePolicy(row.policy, row.usage), { principal, action: 'unwrap' });
    if (!decision.allowed) {
      if (!db.isTransaction)
        await appendAudit(db, {
          principal,
          action: 'unwrap',
          keyId,
          outcome: 'denied',
          errorCode: 'AccessDenied',
          context: { usage: row.usage },
        });
      throw new KmsError('AccessDenied', `key ${keyId}: ${decision.reason}`);
    }
    if (!row.kek_id || row.kek_version === null || !row.dek_wrapped || !row.key_ciphertext) {
      throw new KmsError('KeyUnavailable', `key ${keyId} has no wrapped material`);
    }
    const kek = await this.kek(row.kek_id, row.kek_version, db);
    const dek = open(
      kek,
      row.dek_wrapped,
      { purpose: PURPOSE.dek, keyId: row.kek_id, version: row.kek_version },
      dekContext(keyId, row.usage),
    );
    let pkcs8: Buffer;
    try {
      pkcs8 = open(
        createSecretKey(dek),
        row.key_ciphertext,
        { purpose: PURPOSE.privateKey, keyId, version: 1 },
        privateKeyContext(keyId, row.alg, row.spki_sha256),
      );
    } finally {
      dek.fill(0);
    }
    const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    pkcs8.fill(0);
    const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
    const digest = createHash('sha256').update(spki).digest();
    if (!timingSafeEqual(digest, Buffer.from(row.spki_sha256))) {
      throw new KmsError('InvalidCiphertext', `key ${keyId} does not match its recorded public key`);
    }
    await appendAudit(db, {
      principal,
      action: 'unwrap',
      keyId,
      keyVersion: row.kek_version,
      outcome: 'success',
      context: { usage: row.usage },
    });
    const entry: CachedKey = { key, alg: row.alg as AsymmetricAlg, kekVersion: row.kek_version };
    this.keys.set(keyId, entry);
    return entry;
  }

  async publicKey(keyId: string, principal = 'keyward', db: Executor = this.db): Promise<KeyObject> {
    return createPublicKey((await this.privateKey(keyId, principal, db)).key);
  }

  /**
   * A Signer for one key and operation. Each signature checks the key's state in the database and
   * is written to the audit log before the signature is released (fail-closed). Pass the caller's
   * transaction as `db` to make the key use part of its unit of work.
   */
  async signer(keyId: string, operation: SignOperation, principal: string, db: Executor = this.db): Promise<Signer> {
    const { key } = await this.privateKey(keyId, principal, db);
    const algorithm = signatureAlgorithmFor(key);
    const spki = new Uint8Array(createPublicKey(key).export({ type: 'spki', format: 'der' }));
    return {
      algorithm,
      spki,
      sign: (data: Uint8Array, context?: SignContext) =>
        this.signAudited(db, keyId, operation, principal, data, context ?? {}),
    };
  }

  private async signAudited(
    db: Executor,
    keyId: string,
    operation: SignOperation,
    principal: string,
    data: Uint8Array,
    context: SignContext,
  ): Promise<Uint8Array> {
    const cached = await this.privateKey(keyId, principal, db);
    try {
      const signature = await inTransaction(db, async (trx) => {
        // State and policy are read from the database for every signature, so a disable or a
        // policy change applies on every replica at once (design §3.5). No row lock is taken here:
        // the audit head is the only lock a signature holds, so signers never wait on each other's
        // key rows and can't deadlock with a transaction that creates a key and then signs.
        const row = await trx
          .selectFrom('kms_keys')
          .select(['state', 'policy', 'usage'])
          .where('id', '=', keyId)
          .executeTakeFirst();
        if (row?.state !== 'Enabled')
          throw new KmsError(
            'KeyDisabled',
            `key ${keyId}${row ? ` (${row.usage})` : ''} is ${row?.state ?? 'missing'} and cannot sign`,
          );
        const decision = evaluate(effectivePolicy(row.policy, row.usage), {
          principal,
          action: operation,
          profile: context.profile,
          issuer: context.issuer,
        });
        if (!decision.allowed) throw new KmsError('AccessDenied', `key ${keyId} (${row.usage}): ${decision.reason}`);
        await appendAudit(trx, {
          principal,
          action: operation,
          keyId,
          keyVersion: cached.kekVersion,
          outcome: 'success',
          context: { ...context },
        });
        return signWithKeyObject(cached.key, signatureAlgorithmFor(cached.key), data);
      });
      // The usage count is a statistic for `kms list`; the audit log is the record of each use.
      if (!db.isTransaction) {
        await this.uses.submit(keyId);
      }
      return signature;
    } catch (err) {
      const denied = err instanceof KmsError && (err.code === 'KeyDisabled' || err.code === 'AccessDenied');
      // Inside a caller's transaction the refusal is rolled back with it; the caller's error stands.
      if (db.isTransaction) throw err;
      await appendAudit(db, {
        principal,
        action: operation,
        keyId,
        keyVersion: cached.kekVersion,
        outcome: denied ? 'denied' : 'failure',
        errorCode: err instanceof KmsError ? err.code : 'InternalError',
        context: { ...context },
      });
      throw err;
    }
  }
}

export function dekContext(keyId: string, usage: string): Record<string, string> {
  return { 'kw:purpose': 'dek', 'kw:key': keyId, 'kw:usage': usage };
}

function privateKeyContext(keyId: string, alg: string, spkiSha256: Uint8Array): Record<string, string> {
  return {
    'kw:purpose': 'private-key',
    'kw:key': keyId,
    'kw:alg': alg,
    'kw:spki': Buffer.from(spkiSha256).toString('hex'),
  };
}
