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

import { sql } from 'kysely';

import type { Executor, KeyProtection, KeyUsage, KmsKeyRow } from '../db/schema.ts';
import { type Attached, AUDIT_KEK, type AuditEvent, AuditLog, inTransaction } from './audit.ts';
import { open, PURPOSE, seal } from './container.ts';
import { KmsError } from './errors.ts';
import { insertPrimaryKekVersion } from './hierarchy-rows.ts';
import { effectivePolicy, evaluate } from './key-policy.ts';
import { algOf, type AsymmetricAlg, generateKeyPair } from './key-types.ts';
import type { TokenSettings } from './pkcs11/module.ts';
import { type SessionPool, sessionPool } from './pkcs11/session-pool.ts';
import {
  destroyTokenKey,
  generateTokenKey,
  type TokenKeyAttributes,
  type TokenKeyRef,
  tokenSign,
} from './pkcs11/token-keys.ts';
import type { RootOfTrust, RootRecord } from './roots/types.ts';
import {
  type AuthorizedSignature,
  type RsaScheme,
  type SignatureAlgorithm,
  signatureAlgorithmFor,
  type SignContext,
  type Signer,
  signWithKeyObject,
} from './signer.ts';
import { sealedRoot, Unsealer, type UnsealStatus } from './unseal.ts';

export const CA_KEK = 'ca-keys';

export type SignOperation = 'sign-certificate' | 'sign-crl' | 'sign-ocsp' | 'sign-audit-checkpoint' | 'sign-token';

/** The PKCS#11 token that holds HSM-resident keys (protection 'hsm'), and its session pool size. */
export interface HsmSettings extends Omit<TokenSettings, 'token'> {
  token: string;
  sessions: number;
}

/** What the database keeps for an HSM key instead of key material. */
export interface StoredTokenRef extends TokenKeyRef {
  attributes: TokenKeyAttributes;
}

interface KeyCommon {
  alg: AsymmetricAlg;
  algorithm: SignatureAlgorithm;
  spki: Uint8Array;
}

/** A wrapped key, unwrapped into this process. */
interface WrappedKey extends KeyCommon {
  protection: 'wrapped';
  key: KeyObject;
  kekVersion: number;
}

/** An HSM key: only where it is; every signature is made in the token. */
interface TokenKey extends KeyCommon {
  protection: 'hsm';
  ref: TokenKeyRef;
}

type CachedKey = WrappedKey | TokenKey;

/** What a signature's permission depends on: the key's state, its policy and what it is for. */
type KeyRowCheck = Pick<KmsKeyRow, 'state' | 'policy' | 'usage'>;

const USE_COUNT_FLUSH_MS = 1000;

const spkiOf = (key: KeyObject) =>
  new Uint8Array((key.type === 'public' ? key : createPublicKey(key)).export({ type: 'spki', format: 'der' }));

/**
 * Levels 1 and 2 of the key hierarchy: KEK versions wrapped by the root of trust, and one DEK per
 * asymmetric key wrapped by a KEK version. Plaintext keys exist only as KeyObjects in this process.
 */
export class KeyHierarchy {
  private readonly keks = new Map<string, KeyObject>();
  private readonly keys = new Map<string, CachedKey>();
  private readonly keyRows = new Map<string, KeyRowCheck>();
  private readonly pendingUses = new Map<string, number>();
  private usesTimer: NodeJS.Timeout | undefined;
  private auditLog: AuditLog | undefined;

  constructor(
    private readonly db: Executor,
    private root: RootOfTrust,
    private readonly installId: string,
    private readonly hsm?: HsmSettings,
  ) {}

  /** The session pool of the token that holds HSM keys (one per process and token). */
  private tokenPool(token = this.hsm?.token): SessionPool {
    if (!this.hsm || !token)
      throw new KmsError(
        'InvalidInput',
        'protection "hsm" needs kms.hsm in the configuration (module, token and pinFile of a PKCS#11 token)',
      );
    return sessionPool({ module: this.hsm.module, token, pin: this.hsm.pin }, this.hsm.sessions);
  }

  /** The keyed audit log; available once `openAudit` has run (openKeyHierarchy does it). */
  get audit(): AuditLog {
    if (!this.auditLog) throw new KmsError('AuditFailure', 'the audit chain key is not loaded');
    return this.auditLog;
  }

  /**
   * Loads the audit chain key, or on first use creates it (a KEK of purpose `audit`, wrapped by the
   * root like any other) and keys the chain from the next event on. Events before that stay a
   * legacy prefix (see audit.ts). The head lock makes replicas that start together agree on one key.
   */
  async openAudit(db: Executor, principal: string): Promise<void> {
    const existing = await auditKek(db);
    if (existing) {
      this.auditLog = new AuditLog(await this.kek(existing.id, existing.version, db));
      return;
    }
    const id = randomUUID();
    const material = randomBytes(32);
    try {
      const wrapped = await this.root.wrapKek(material, { kekId: id, version: 1, installId: this.installId });
      await inTransaction(db, async (trx) => {
        const head = await sql<{ seq: string | number }>`
          SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE`.execute(trx);
        const raced = await auditKek(trx);
        if (raced) {
          this.auditLog = new AuditLog(await this.kek(raced.id, raced.version, trx));
          return;
        }
        const keyedFrom = Number(head.rows[0]!.seq) + 1;
        await this.insertKek(trx, id, AUDIT_KEK, 'audit', wrapped);
        await trx.updateTable('audit_head').set({ keyed_from: keyedFrom }).where('id', '=', 1).execute();
        this.auditLog = new AuditLog(createSecretKey(material));
        await this.auditLog.append(trx, {
          principal,
          action: 'create-kek',
          keyId: id,
          keyVersion: 1,
          outcome: 'success',
          context: { name: AUDIT_KEK, purpose: 'audit', keyed_from: keyedFrom },
        });
        this.keks.set(`${id}/1`, createSecretKey(material));
      });
    } finally {
      material.fill(0);
    }
  }

  get rootId(): string {
    return this.root.id;
  }

  private unsealer: Unsealer | undefined;
  private unsealedBy: number[] = [];
  private readonly unsealListeners: (() => void)[] = [];

  /**
   * Starts sealed on a shares root: nothing can be unwrapped or signed (every attempt fails with
   * Sealed) until `unseal` has collected the threshold of shares in this process.
   */
  seal(rootId: string): void {
    this.root = sealedRoot(
      rootId,
      'the CA is sealed: its root of trust opens when enough share holders have run keyward unseal',
    );
    this.unsealer = new Unsealer();
  }

  /** True while a shares root waits for its shares (this process only: each replica is unsealed). */
  get sealed(): boolean {
    return this.unsealer !== undefined;
  }

  private async rootRecord(): Promise<RootRecord> {
    const row = await this.db.selectFrom('kms_roots').selectAll().where('id', '=', this.root.id).executeTakeFirst();
    if (row?.provider !== 'shares') throw new KmsError('InvalidState', 'the root of trust is not a shares root');
    return { id: row.id, provider: row.provider, params: row.params, kcv: row.kcv };
  }

  async unsealStatus(): Promise<UnsealStatus> {
    const record = await this.rootRecord();
    if (this.unsealer) return this.unsealer.status(record, true);
    return { ...new Unsealer().status(record, false), entered: this.unsealedBy };
  }

  /**
   * One holder's share. Refused shares (malformed, mistyped, of another set, altered, repeated)
   * change nothing; the last one needed rebuilds the root key, checks it, and opens the hierarchy.
   */
  async unseal(shareText: string, principal: string): Promise<UnsealStatus> {
    if (!this.unsealer) {
      await this.rootRecord();
      throw new KmsError('InvalidState', 'the CA is not sealed');
    }
    const record = await this.rootRecord();
    const { root, used } = await this.unsealer.submit(record, shareText, principal);
    if (!root) return this.unsealer.status(record, true);
    await this.openWith(root, record, used, principal);
    return this.unsealStatus();
  }

  /**
   * Opens a sealed hierarchy with its rebuilt root (after unseal, or rekey-shares, which has the
   * threshold of shares in hand too): the audit chain key is unwrapped first, so the event that
   * records who opened it — every principal who gave a share, and which share — is keyed like any.
   */
  async openWith(
    root: RootOfTrust,
    record: RootRecord,
    used: { index: number; principal: string }[],
    principal: string,
  ): Promise<void> {
    if (!this.unsealer) return;
    const sealed = this.root;
    this.root = root;
    try {
      await this.openAudit(this.db, principal);
    } catch (err) {
      this.root = sealed;
      throw err;
    }
    this.unsealer = undefined;
    this.unsealedBy = used.map((u) => u.index).sort((a, b) => a - b);
    await this.audit.append(this.db, {
      principal,
      action: 'unseal',
      keyId: record.id,
      outcome: 'success',
      context: {
        shares: this.unsealedBy.join(','),
        principals: [...new Set(used.map((u) => u.principal))].join(','),
        set: (record.params as { setId: string }).setId,
      },
    });
    for (const listener of this.unsealListeners.splice(0)) listener();
  }

  /** Forgets the shares entered so far (a holder entered the wrong one, or the attempt is abandoned). */
  async resetUnseal(): Promise<UnsealStatus> {
    if (!this.unsealer) throw new KmsError('InvalidState', 'the CA is not sealed');
    this.unsealer.reset();
    return this.unsealStatus();
  }

  /** Runs `fn` once the hierarchy is unsealed (now, when it is not sealed). */
  whenUnsealed(fn: () => void): void {
    if (this.sealed) this.unsealListeners.push(fn);
    else fn();
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
    purpose: 'ca-keys' | 'app-data' | 'import' | 'secrets',
    principal: string,
  ): Promise<string> {
    const existing = await db.selectFrom('kms_keks').select('id').where('name', '=', name).executeTakeFirst();
    if (existing) return existing.id;
    const id = randomUUID();
    const material = randomBytes(32);
    try {
      const wrapped = await this.root.wrapKek(material, { kekId: id, version: 1, installId: this.installId });
      await inTransaction(db, async (trx) => {
        await this.insertKek(trx, id, name, purpose, wrapped);
        await this.audit.append(trx, {
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

  private async insertKek(
    trx: Executor,
    id: string,
    name: string,
    purpose: 'ca-keys' | 'app-data' | 'import' | 'audit' | 'secrets',
    wrapped: Buffer,
  ): Promise<void> {
    await trx.insertInto('kms_keks').values({ id, name, purpose, auto_rotate_days: null }).execute();
    await insertPrimaryKekVersion(trx, { kekId: id, version: 1, rootId: this.root.id, wrapped });
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

  /**
   * Generates an asymmetric key in the caller's unit of work. `wrapped` (the default) keeps it
   * encrypted under a DEK (envelope encryption); `hsm` generates it in the PKCS#11 token as a
   * sensitive, never extractable key and stores only where it is and its public key.
   */
  async createKey(
    db: Executor,
    opts: { usage: KeyUsage; alg: AsymmetricAlg; principal: string; protection?: KeyProtection; rsaScheme?: RsaScheme },
  ): Promise<{ id: string; publicKey: KeyObject; protection: KeyProtection }> {
    if (opts.rsaScheme === 'pss' && !opts.alg.startsWith('rsa-'))
      throw new KmsError('InvalidInput', `the PSS signature scheme is for RSA keys, not ${opts.alg}`);
    if (opts.protection === 'hsm') return this.createTokenKey(db, opts);
    const { privateKey, publicKey } = generateKeyPair(opts.alg);
    const id = await this.storeKey(db, {
      usage: opts.usage,
      privateKey,
      principal: opts.principal,
      action: 'create-key',
      rsaScheme: opts.rsaScheme,
    });
    return { id, publicKey, protection: 'wrapped' };
  }

  private async createTokenKey(
    db: Executor,
    opts: { usage: KeyUsage; alg: AsymmetricAlg; principal: string; rsaScheme?: RsaScheme },
  ): Promise<{ id: string; publicKey: KeyObject; protection: 'hsm' }> {
    const id = randomUUID();
    const pool = this.tokenPool();
    const made = await generateTokenKey(pool, id, opts.alg);
    const spki = spkiOf(made.publicKey);
    const spkiSha256 = createHash('sha256').update(spki).digest();
    const stored: StoredTokenRef = { ...made.ref, attributes: made.attributes };
    const rsaScheme = opts.rsaScheme ?? 'pkcs1';
    try {
      await inTransaction(db, async (trx) => {
        await trx
          .insertInto('kms_keys')
          .values({
            id,
            usage: opts.usage,
            alg: opts.alg,
            spki_sha256: spkiSha256,
            backend: 'hsm',
            spki,
            token_ref: JSON.stringify(stored),
            rsa_scheme: rsaScheme,
            policy: null,
            kek_id: null,
            kek_version: null,
            dek_wrapped: null,
            key_ciphertext: null,
            external_ref: null,
            deletion_at: null,
            destroyed_at: null,
          })
          .execute();
        await this.audit.append(trx, {
          principal: opts.principal,
          action: 'create-key',
          keyId: id,
          outcome: 'success',
          context: {
            usage: opts.usage,
            alg: opts.alg,
            protection: 'hsm',
            token: made.ref.token,
            label: made.ref.label,
            extractable: made.attributes.extractable,
            sensitive: made.attributes.sensitive,
            spki_sha256: spkiSha256.toString('hex'),
          },
        });
      });
    } catch (err) {
      // Nothing in the database names the new pair, so nothing would ever use or delete it.
      await destroyTokenKey(pool, made.ref).catch(() => undefined);
      throw err;
    }
    const algorithm = signatureAlgorithmFor(made.publicKey, rsaScheme);
    this.keys.set(id, { protection: 'hsm', ref: made.ref, alg: opts.alg, algorithm, spki });
    return { id, publicKey: made.publicKey, protection: 'hsm' };
  }

  /** Deletes an HSM key's pair from its token (the deletion janitor, once the window has passed). */
  async destroyInToken(ref: TokenKeyRef): Promise<void> {
    await destroyTokenKey(this.tokenPool(ref.token), ref);
    this.keys.forEach((k, id) => k.protection === 'hsm' && k.ref.id === ref.id && this.keys.delete(id));
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
      rsaScheme?: RsaScheme;
    },
  ): Promise<string> {
    const id = opts.id ?? randomUUID();
    const alg = algOf(opts.privateKey);
    const rsaScheme = opts.rsaScheme ?? 'pkcs1';
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
            rsa_scheme: rsaScheme,
          })
          .execute();
        await this.audit.append(trx, {
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
    this.keys.set(id, {
      protection: 'wrapped',
      key: opts.privateKey,
      alg,
      algorithm: signatureAlgorithmFor(opts.privateKey, rsaScheme),
      spki: new Uint8Array(spki),
      kekVersion: kek.version,
    });
    return id;
  }

  /**
   * A key ready to sign (once per process): a wrapped key is unwrapped into memory, checking every
   * layer's binding; an HSM key is only located (its private half never comes here).
   */
  private async loadKey(keyId: string, principal: string, db: Executor): Promise<CachedKey> {
    const cached = this.keys.get(keyId);
    if (cached) return cached;
    const row = await db.selectFrom('kms_keys').selectAll().where('id', '=', keyId).executeTakeFirst();
    if (!row) throw new KmsError('NotFound', `key ${keyId} does not exist`);
    if (row.state !== 'Enabled') throw new KmsError('KeyDisabled', `key ${keyId} (${row.usage}) is ${row.state}`);
    if (row.backend === 'hsm') return this.locateTokenKey(row);
    const decision = evaluate(effectivePolicy(row.policy, row.usage), { principal, action: 'unwrap' });
    if (!decision.allowed) {
      if (!db.isTransaction)
        await this.audit.append(db, {
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
    const spki = spkiOf(key);
    const digest = createHash('sha256').update(spki).digest();
    if (!timingSafeEqual(digest, Buffer.from(row.spki_sha256))) {
      throw new KmsError('InvalidCiphertext', `key ${keyId} does not match its recorded public key`);
    }
    await this.audit.append(db, {
      principal,
      action: 'unwrap',
      keyId,
      keyVersion: row.kek_version,
      outcome: 'success',
      context: { usage: row.usage },
    });
    const entry: CachedKey = {
      protection: 'wrapped',
      key,
      alg: row.alg as AsymmetricAlg,
      algorithm: signatureAlgorithmFor(key, row.rsa_scheme),
      spki,
      kekVersion: row.kek_version,
    };
    this.keys.set(keyId, entry);
    return entry;
  }

  private locateTokenKey(row: KmsKeyRow): TokenKey {
    const stored = row.token_ref as StoredTokenRef | null;
    if (!stored || !row.spki)
      throw new KmsError('KeyUnavailable', `key ${row.id} is an HSM key with no token reference`);
    const spki = new Uint8Array(row.spki);
    const entry: TokenKey = {
      protection: 'hsm',
      ref: { token: stored.token, id: stored.id, label: stored.label },
      alg: row.alg as AsymmetricAlg,
      algorithm: signatureAlgorithmFor(
        createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
        row.rsa_scheme,
      ),
      spki,
    };
    this.keys.set(row.id, entry);
    return entry;
  }

  async publicKey(keyId: string, principal = 'keyward', db: Executor = this.db): Promise<KeyObject> {
    const { spki } = await this.loadKey(keyId, principal, db);
    return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  }

  /**
   * A Signer for one key and operation. Each key use checks the key's state in the database and
   * is written to the audit log before the signature is made (fail-closed). Pass the caller's
   * transaction as `db` to make the key use part of its unit of work.
   */
  async signer(keyId: string, operation: SignOperation, principal: string, db: Executor = this.db): Promise<Signer> {
    const { algorithm, spki } = await this.loadKey(keyId, principal, db);
    const authorize = <C>(context: SignContext, attached?: Attached<C>) =>
      this.authorizeUse(db, keyId, operation, principal, context, attached);
    return {
      algorithm,
      spki,
      sign: async (data: Uint8Array, context?: SignContext) => {
        const use = await authorize(context ?? {});
        if (use === 'vetoed') throw new KmsError('AuditFailure', 'a key use with nothing attached was vetoed');
        return use.sign(data);
      },
      authorize,
    };
  }

  /** state, policy and usage of a key as last read here; each grouped audit append checks them again. */
  private async keyRow(keyId: string, db: Executor, fresh: boolean): Promise<KeyRowCheck | undefined> {
    if (!fresh) {
      const cached = this.keyRows.get(keyId);
      if (cached) return cached;
    }
    const row = await db
      .selectFrom('kms_keys')
      .select(['state', 'policy', 'usage'])
      .where('id', '=', keyId)
      .executeTakeFirst();
    if (row) this.keyRows.set(keyId, row);
    else this.keyRows.delete(keyId);
    return row;
  }

  private checkKey(
    keyId: string,
    row: KeyRowCheck | undefined,
    operation: SignOperation,
    principal: string,
    context: SignContext,
  ): asserts row is KeyRowCheck {
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
  }

  /**
   * Authorises one signature before it is made: state and policy are checked and the key use's
   * audit event committed (with `attached`'s rows in its statement), so no signature exists whose
   * use the log does not hold. The answer makes the signature; if that fails, a `failure` event
   * naming the authorising event's seq follows.
   */
  private async authorizeUse<C>(
    db: Executor,
    keyId: string,
    operation: SignOperation,
    principal: string,
    context: SignContext,
    attached?: Attached<C>,
  ): Promise<AuthorizedSignature | 'vetoed'> {
    const cached = await this.loadKey(keyId, principal, db);
    const kekVersion = cached.protection === 'wrapped' ? cached.kekVersion : null;
    const auditContext = cached.protection === 'hsm' ? { ...context, protection: 'hsm' } : { ...context };
    const event: AuditEvent = {
      principal,
      action: operation,
      keyId,
      keyVersion: kekVersion,
      outcome: 'success',
      context: auditContext,
    };
    let seq: number;
    try {
      if (db.isTransaction) {
        // In the caller's transaction: state and policy read in it, the event appended under the
        // head lock, both committed (or not) with the caller's work.
        if (attached) throw new KmsError('InvalidInput', 'attached rows are written by grouped appends only');
        this.checkKey(keyId, await this.keyRow(keyId, db, true), operation, principal, context);
        seq = await this.audit.append(db, event);
      } else {
        // State and policy apply to every signature on every replica at once (a disabled key must
        // stop signing everywhere, not when each replica's cache expires): they are evaluated here
        // on the row as last read, and the statement that appends the event re-checks that the
        // row is still that (Enabled, same policy); if not, it is read again and evaluated again.
        // A refusal is never decided on a remembered row: it is read again first.
        let row = await this.keyRow(keyId, db, false);
        try {
          this.checkKey(keyId, row, operation, principal, context);
        } catch {
          row = await this.keyRow(keyId, db, true);
          this.checkKey(keyId, row, operation, principal, context);
        }
        for (let attempt = 0; ; attempt++) {
          const out = await this.audit.appendGrouped(db, event, { keyId, policy: row.policy }, attached);
          if ('seq' in out) {
            seq = out.seq;
            break;
          }
          if ('vetoed' in out) return 'vetoed';
          if (attempt >= 3) throw new KmsError('AuditFailure', `key ${keyId} kept changing while signing`);
          row = await this.keyRow(keyId, db, true);
          this.checkKey(keyId, row, operation, principal, context);
        }
      }
    } catch (err) {
      const denied = err instanceof KmsError && (err.code === 'KeyDisabled' || err.code === 'AccessDenied');
      // Inside a caller's transaction the refusal is rolled back with it; the caller's error stands.
      if (db.isTransaction) throw err;
      await this.audit.append(db, {
        ...event,
        outcome: denied ? 'denied' : 'failure',
        errorCode: err instanceof KmsError ? err.code : 'InternalError',
      });
      throw err;
    }
    let made = false;
    return {
      sign: async (data: Uint8Array) => {
        if (made) throw new KmsError('InvalidState', 'an authorised key use signs once');
        made = true;
        try {
          const signature =
            cached.protection === 'wrapped'
              ? signWithKeyObject(cached.key, cached.algorithm, data)
              : await tokenSign(this.tokenPool(cached.ref.token), cached.ref, cached.algorithm, data);
          if (!db.isTransaction) this.countUse(keyId);
          return signature;
        } catch (err) {
          // The authorisation is in the log; this says its signature was never made.
          if (!db.isTransaction)
            await this.audit.append(db, {
              ...event,
              outcome: 'failure',
              errorCode: err instanceof KmsError ? err.code : 'InternalError',
              context: { ...auditContext, authorized: seq },
            });
          throw err;
        }
      },
    };
  }

  /**
   * The usage count is a statistic for `kms list`; the audit log is the record of each use. Counts
   * are added up here and written once a second (and on close), one statement per key.
   */
  private countUse(keyId: string): void {
    this.pendingUses.set(keyId, (this.pendingUses.get(keyId) ?? 0) + 1);
    if (this.usesTimer) return;
    this.usesTimer = setTimeout(() => {
      this.usesTimer = undefined;
      void this.flushUses().catch(() => undefined);
    }, USE_COUNT_FLUSH_MS);
    this.usesTimer.unref();
  }

  /** Writes the usage counts not yet written (a closing context calls it). */
  async flushUses(): Promise<void> {
    if (this.usesTimer) clearTimeout(this.usesTimer);
    this.usesTimer = undefined;
    const counts = [...this.pendingUses];
    this.pendingUses.clear();
    for (const [id, n] of counts) {
      await this.db
        .updateTable('kms_keys')
        .set((eb) => ({ use_count: eb('use_count', '+', n) }))
        .where('id', '=', id)
        .execute();
    }
  }
}

async function auditKek(db: Executor): Promise<{ id: string; version: number } | undefined> {
  return db
    .selectFrom('kms_keks')
    .innerJoin('kms_kek_versions', 'kms_kek_versions.kek_id', 'kms_keks.id')
    .select(['kms_keks.id', 'kms_kek_versions.version'])
    .where('kms_keks.purpose', '=', 'audit')
    .where('kms_kek_versions.is_primary', '=', true)
    .executeTakeFirst();
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
