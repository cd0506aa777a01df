import { createHash } from 'node:crypto';

import { sql } from 'kysely';

import type { CaKeyType, Profile, SubjectKeyType } from '../config/schema.ts';
import { type Clock, systemClock } from '../core/clock.ts';
import { crashPoint } from '../core/crash-points.ts';
import { KeywardError } from '../core/errors.ts';
import { events } from '../core/events.ts';
import type { SanSet } from '../core/identifiers.ts';
import { normalizeSerial } from '../core/serial.ts';
import type { Listen } from '../db/notifications.ts';
import type { CertificateRow, Db, Executor, IssuerRow, IssuerState } from '../db/schema.ts';
import type { AttachedWrites, AuthorizedSignature, KeyHierarchy, Signer } from '../kms/index.ts';
import { buildSelfSignedCa, buildSubordinateCa } from './ca-builder.ts';
import type { NameConstraintsSpec } from './cert-extensions.ts';
import { chainPem, chainsFrom } from './chains.ts';
import { ROOT_PATH_LENGTH } from './cross-certificates.ts';
import {
  claimingReservations,
  isBlocked,
  IssueWrites,
  recordBatch,
  type Recorded,
  type RecordWith,
  type Reservation,
  reservationsWithAudit,
  reserveBatch,
} from './issue-writes.ts';
import { parseIssuerCertificate } from './issuer-certificate.ts';
import { announceIssuerChange, chooseIssuer, issuerKey, IssuerRegistry, noIssuerFor } from './issuers.ts';
import { createLeafBuilder } from './leaf-builder.ts';
import { checkNameConstraints, type NameConstraints, nameConstraintsOf } from './name-constraints.ts';
import { normalizeSans } from './names.ts';
import { toPem } from './pem.ts';
import { checkAgainstProfile } from './profile-check.ts';
import { type Revocation, revokeCertificate } from './revocation.ts';
import { caIssuersUrl, crlUrl, isPassiveRevocation, ocspUrl, shardFor } from './revocation-urls.ts';
import { randomSerial } from './serial.ts';
import { trustedRoots } from './trusted-roots.ts';
import { x509 } from './x509.ts';

const EKU_OIDS: Record<Profile['extKeyUsages'][number], string> = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
};

/** RFC 5280 leaves a minute of back-dating to absorb clock skew between us and relying parties. */
const BACKDATE_MS = 60_000;

export interface CaKeySpec {
  keyType: CaKeyType;
  commonName: string;
  lifetime: number;
  nameConstraints?: NameConstraintsSpec;
}

export interface InitSpec {
  organization: string;
  root: CaKeySpec;
  intermediate: CaKeySpec;
}

/** A decided request: the front end has chosen names, key, profile and lifetime. */
export interface IssueRequest {
  subjectPublicKeyInfo: Uint8Array;
  keyType: SubjectKeyType;
  rsaBits?: number;
  commonName?: string;
  sans: SanSet;
  profile: string;
  /** Defaults to the profile's default lifetime. */
  lifetimeMs?: number;
  /** Adds the TLS feature status_request (OCSP must-staple); only with an OCSP URL. */
  mustStaple?: boolean;
  requester: string;
  /**
   * Runs in the transaction that reserves the serial (after the blocked-key check passed), so a
   * caller's one-time right to a certificate (a bootstrap token) is spent with the reservation or
   * not at all. Throwing refuses the request before anything is signed.
   */
  onReserved?: (trx: Executor, serial: string) => Promise<void>;
  /**
   * The caller's claim on what the certificate is for (an ACME order turning processing), written
   * by the statement that reserves the serial and audits the key use: one flushed commit for all
   * three, group-committed across concurrent issues. If the claim's veto holds (the thing claimed
   * is gone or already taken), nothing is written and issue throws what `lost` gives; once issue
   * has got past the reservation, `claimed` runs. Not with `onReserved`.
   */
  reserveWith?: ReserveWith;
  /**
   * Runs in the transaction that marks the reservation `abandoned` when the signature is refused
   * (a disabled key, a sealed hierarchy), so the caller can give back what `onReserved` took.
   */
  onAbandoned?: (trx: Executor, serial: string) => Promise<void>;
  /**
   * Runs in the transaction that records the certificate, so the caller's own bookkeeping (an ACME
   * order turning valid) commits with it or not at all.
   */
  onRecorded?: (trx: Executor, serial: string) => Promise<void>;
  /**
   * The caller's bookkeeping as one conditional write (an UPDATE … RETURNING) in the statement that
   * records the certificate, group-committed with concurrent issues' (RecordWrites): the
   * certificate is recorded only if that write links it (else issue fails and the reservation
   * stays, naming what was signed); its rows come back as `linked`.
   */
  recordWith?: RecordWith;
  /** More writes for that statement, for the certificates `recordWith` linked: what the issue owes. */
  recordAlso?: RecordWith[];
}

export interface ReserveWith<C = unknown> {
  claims: AttachedWrites<C>;
  item: C;
  lost(): Promise<Error>;
  claimed(): void;
}

export interface IssuedCertificate {
  serial: string;
  issuerId: string;
  der: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** Leaf first, then the intermediate. */
  chainPem: string;
  /** What `recordWith` returned. */
  linked?: unknown[];
}

/** What leaf certificates need to point relying parties at revocation information. */
export interface LeafRevocationSettings {
  /** Public base URL of the plain HTTP listener (no trailing slash). */
  baseUrl: string;
  /** CRL shards for new certificates. */
  crlShards: number;
}

type LeafBuilder = ReturnType<typeof createLeafBuilder>;

interface SigningIssuer {
  row: IssuerRow;
  signer: Signer;
  builder: LeafBuilder;
  constraints: NameConstraints | undefined;
}

export class CertificateAuthority {
  readonly registry: IssuerRegistry;
  private readonly signing = new Map<string, Promise<SigningIssuer>>();
  private readonly writes: IssueWrites;

  constructor(
    private readonly db: Db,
    private readonly kms: KeyHierarchy,
    readonly profiles: ReadonlyMap<string, Profile>,
    private readonly clock: Clock = systemClock,
    private readonly revocation?: LeafRevocationSettings,
    /**
     * Where issuance's group-committed writes run (the reservation with its audit event, the
     * record): connections that plan each statement once (DatabaseHandle.genericPlans).
     */
    private readonly batches: Db = db,
  ) {
    this.writes = new IssueWrites(batches);
    this.registry = new IssuerRegistry(db);
  }

  /**
   * Creates the root and the issuing intermediate in one unit of work. Idempotent: when the CA
   * exists nothing changes. An advisory lock keeps two replicas from initialising at once.
   */
  async init(
    spec: InitSpec,
    principal: string,
  ): Promise<{ created: boolean; root: IssuerRow; intermediate: IssuerRow }> {
    return this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext('keyward:ca-init'))`.execute(trx);
      const existing = await trx.selectFrom('issuers').selectAll().orderBy('created_at').execute();
      const root0 = existing.find((i) => i.kind === 'root');
      const inter0 =
        existing.find((i) => i.kind === 'intermediate' && i.active) ?? existing.find((i) => i.kind === 'intermediate');
      if (root0 && inter0) return { created: false, root: root0, intermediate: inter0 };
      if (root0 || inter0)
        throw new KeywardError(
          'notInitialized',
          'the CA is half initialised (a root without an intermediate); restore the database',
        );

      const now = this.clock.now();
      const notBefore = new Date(now.getTime() - BACKDATE_MS);
      const rootKey = await this.kms.createKey(trx, { usage: 'root-ca', alg: spec.root.keyType, principal });
      const rootSigner = await this.kms.signer(rootKey.id, 'sign-certificate', principal, trx);
      const rootSerial = randomSerial();
      const rootDer = await buildSelfSignedCa(
        {
          serial: Buffer.from(rootSerial, 'hex'),
          notBefore,
          notAfter: new Date(now.getTime() + spec.root.lifetime),
          subject: { commonName: spec.root.commonName, organization: spec.organization },
          subjectPublicKeyInfo: rootSigner.spki,
          pathLength: ROOT_PATH_LENGTH,
        },
        rootSigner,
      );
      const root = await insertIssuer(trx, { kind: 'root', parentId: null, keyId: rootKey.id, der: rootDer });

      const interKey = await this.kms.createKey(trx, {
        usage: 'intermediate',
        alg: spec.intermediate.keyType,
        principal,
      });
      const interSpki = new Uint8Array(interKey.publicKey.export({ type: 'spki', format: 'der' }));
      const interSerial = randomSerial();
      const interDer = await buildSubordinateCa(
        {
          serial: Buffer.from(interSerial, 'hex'),
          notBefore,
          notAfter: new Date(Math.min(now.getTime() + spec.intermediate.lifetime, root.not_after.getTime())),
          subject: { commonName: spec.intermediate.commonName, organization: spec.organization },
          subjectPublicKeyInfo: interSpki,
          pathLength: 0,
          nameConstraints: spec.intermediate.nameConstraints,
        },
        { certificate: rootDer, signer: rootSigner },
      );
      const intermediate = await insertIssuer(trx, {
        kind: 'intermediate',
        parentId: root.id,
        keyId: interKey.id,
        der: interDer,
      });
      return { created: true, root, intermediate };
    });
  }

  /** Every issuer row (all states), oldest first; from memory while changes are being followed. */
  issuers(): Promise<IssuerRow[]> {
    return this.registry.all();
  }

  /** Roots a relying party should trust (see trustedRoots): both during a rollover. */
  async trustedRoots(): Promise<IssuerRow[]> {
    return trustedRoots(await this.issuers());
  }

  async rootsPem(): Promise<string> {
    return (await this.trustedRoots()).map((i) => toPem(i.certificate)).join('');
  }

  /** Intermediates whose certificates may be in use: active and retiring ones. */
  async intermediatesPem(): Promise<string> {
    return (await this.issuers())
      .filter((i) => i.kind === 'intermediate' && (i.state === 'active' || i.state === 'retiring'))
      .map((i) => toPem(i.certificate))
      .join('');
  }

  /**
   * The issuer that signs a profile now (see chooseIssuer): the one issuer choice, for the
   * issuance decision path and for the signing below.
   */
  async issuerForProfile(profile: string): Promise<IssuerRow> {
    const row = chooseIssuer(await this.issuers(), profile);
    if (!row) throw noIssuerFor(profile);
    return row;
  }

  /** Keeps the issuer rows in memory, dropped on every change any replica commits. */
  followIssuers(listen: Listen): Promise<() => Promise<void>> {
    return this.registry.follow(listen);
  }

  private async signingIssuer(profile: string): Promise<SigningIssuer> {
    const row = await this.issuerForProfile(profile);
    // Issuer ids are digests of their certificates, so a builder made for an id stays right.
    let signing = this.signing.get(row.id);
    if (!signing) {
      signing = (async () => {
        const signer = await this.kms.signer(issuerKey(row), 'sign-certificate', 'keyward', this.batches);
        return {
          row,
          signer,
          builder: createLeafBuilder({ certificate: row.certificate, signer }),
          constraints: nameConstraintsOf(row.certificate),
        };
      })();
      this.signing.set(row.id, signing);
      signing.catch(() => this.signing.delete(row.id));
    }
    return signing;
  }

  /**
   * Signs a decided request. Serial first: the serial and request are recorded before signing, and
   * the certificate is stored before it is returned, so no certificate exists that the database
   * does not know.
   */
  async issue(req: IssueRequest): Promise<IssuedCertificate> {
    const started = performance.now();
    const profile = this.profiles.get(req.profile);
    if (!profile)
      throw new KeywardError(
        'invalidProfile',
        `unknown profile "${req.profile}" (known: ${[...this.profiles.keys()].join(', ')})`,
      );
    // The core's own check is syntax only (single labels included, for the server's own name);
    // which names a requester may have is decided before a request gets here.
    const sans = normalizeSans(req.sans, { singleLabel: true });
    const lifetimeMs = req.lifetimeMs ?? profile.defaultLifetime;
    checkAgainstProfile(profile, { type: req.keyType, bits: req.rsaBits }, sans, lifetimeMs);
    const issuer = await this.signingIssuer(profile.name);
    checkNameConstraints(issuer.constraints, sans);

    const now = this.clock.now();
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    const notAfter = new Date(now.getTime() + lifetimeMs);
    if (notAfter > issuer.row.not_after)
      throw new KeywardError(
        'malformed',
        `the certificate would outlive its issuer (until ${issuer.row.not_after.toISOString()})`,
      );
    const serial = randomSerial();
    const spkiSha256 = createHash('sha256').update(req.subjectPublicKeyInfo).digest();

    // Shard first, then URLs: the CDP names the shard this certificate will be listed in.
    const shard = this.revocation ? shardFor(serial, this.revocation.crlShards) : 0;
    const urls =
      this.revocation && !isPassiveRevocation(profile, lifetimeMs)
        ? {
            crlDistributionPoint: crlUrl(this.revocation.baseUrl, issuer.row.id, shard),
            ocspUrl: ocspUrl(this.revocation.baseUrl),
            caIssuersUrl: caIssuersUrl(this.revocation.baseUrl, issuer.row.id),
          }
        : {};
    if (req.mustStaple && !('ocspUrl' in urls))
      throw new KeywardError('badCSR', 'OCSP must-staple needs a certificate with an OCSP URL');
    const tbs = issuer.builder.tbs({
      ...(req.mustStaple ? { mustStaple: true } : {}),
      ...urls,
      serial: Buffer.from(serial, 'hex'),
      notBefore,
      notAfter,
      subjectPublicKeyInfo: req.subjectPublicKeyInfo,
      commonName: req.commonName,
      sans,
      extKeyUsages: profile.extKeyUsages.map((e) => EKU_OIDS[e]),
      keyEncipherment: req.keyType === 'rsa',
      certificatePolicies: profile.certificatePolicies,
    });
    const reservation: Reservation = {
      serial,
      issuerId: issuer.row.id,
      profile: profile.name,
      requester: req.requester,
      request: JSON.stringify({ tbs: Buffer.from(tbs).toString('base64'), spkiSha256: spkiSha256.toString('hex') }),
      spkiSha256,
    };
    const context = { serial, profile: profile.name, requester: req.requester };
    const use = await this.reserve(issuer.signer, reservation, context, req);
    crashPoint('serial-reserved', req.requester);
    let der: Uint8Array;
    try {
      der = issuer.builder.wrap(tbs, await use.sign(tbs));
    } catch (err) {
      await this.abandon(serial, req.onAbandoned);
      throw err;
    }
    crashPoint('certificate-signed', req.requester);

    // The certificate and its reservation turning `issued` in one statement (group-committed); with
    // the caller's own bookkeeping (onRecorded) in one transaction.
    const record: Recorded = {
      serial,
      issuerId: issuer.row.id,
      der,
      commonName: req.commonName ?? null,
      sans: JSON.stringify(sans),
      notBefore,
      notAfter,
      profile: profile.name,
      spkiSha256,
      requester: req.requester,
      crlShard: shard,
    };
    const onRecorded = req.onRecorded;
    let linked: unknown[] | undefined;
    if (req.recordWith) {
      const rows = await this.writes.recordLinked(record, req.recordWith, req.recordAlso);
      linked = rows;
      if (rows.length === 0)
        throw new KeywardError('internal', `certificate ${serial} was signed but its request changed meanwhile`);
    } else if (onRecorded)
      await this.db.transaction().execute(async (trx) => {
        await recordBatch(trx, [record]);
        await onRecorded(trx, serial);
      });
    else await this.writes.record(record);
    crashPoint('certificate-stored', req.requester);
    events.certificateIssued.publish({
      serial,
      issuerId: issuer.row.id,
      profile: profile.name,
      requester: req.requester,
      names: [...sans.dns, ...sans.ip, ...sans.uri, ...sans.email],
      notAfter,
      seconds: (performance.now() - started) / 1000,
    });
    return {
      serial,
      issuerId: issuer.row.id,
      der,
      notBefore,
      notAfter,
      chainPem: await this.chainFor({ der, issuer_id: issuer.row.id }),
      ...(linked ? { linked } : {}),
    };
  }

  /**
   * Serial first: the reservation (with the TBS) and the key use it is for are durable before
   * anything is signed. Without caller bookkeeping both go in one statement, group-committed
   * across concurrent issues (the audit event's batch carries the reservations, see
   * reservationsWithAudit). With `onReserved`, the reservation and the caller's spending commit
   * in one transaction, then the key use is authorised on its own; a refusal then abandons the
   * reservation and gives back what was spent.
   */
  private async reserve(
    signer: Signer,
    reservation: Reservation,
    context: Record<string, string>,
    req: IssueRequest,
  ): Promise<AuthorizedSignature> {
    if (!signer.authorize)
      throw new KeywardError('internal', 'the issuer key cannot authorise a signature ahead of it');
    const blocked = () =>
      new KeywardError(
        'badPublicKey',
        'this public key belongs to a certificate revoked for keyCompromise and may not be certified again',
      );
    const onReserved = req.onReserved;
    const claim = req.reserveWith;
    if (claim && onReserved) throw new KeywardError('internal', 'reserveWith and onReserved do not go together');
    if (claim) {
      const use = await signer.authorize(context, {
        writer: claimingReservations(claim.claims),
        item: { reservation, claim: claim.item },
      });
      if (use === 'vetoed') throw (await isBlocked(this.db, reservation.spkiSha256)) ? blocked() : await claim.lost();
      claim.claimed();
      return use;
    }
    if (!onReserved) {
      const use = await signer.authorize(context, { writer: reservationsWithAudit, item: reservation });
      if (use === 'vetoed') throw blocked();
      return use;
    }
    const reserved = await this.db.transaction().execute(async (trx) => {
      const [ok] = await reserveBatch(trx, [reservation]);
      if (ok) await onReserved(trx, reservation.serial);
      return ok === true;
    });
    if (!reserved) throw blocked();
    try {
      const use = await signer.authorize(context);
      if (use === 'vetoed') throw new KeywardError('internal', 'a key use with nothing attached was vetoed');
      return use;
    } catch (err) {
      await this.abandon(reservation.serial, req.onAbandoned);
      throw err;
    }
  }

  /**
   * A refused signature: the reservation will never become a certificate, so it is marked
   * `abandoned` (with the caller's give-back) rather than left `reserved`, which would read as a
   * signature whose record may have been lost. If even that write fails, the reservation stays
   * `reserved` for crash recovery to settle.
   */
  private async abandon(serial: string, onAbandoned: IssueRequest['onAbandoned']): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx
          .updateTable('serial_reservations')
          .set({ status: 'abandoned' })
          .where('serial', '=', serial)
          .where('status', '=', 'reserved')
          .execute();
        await onAbandoned?.(trx, serial);
      });
    } catch {
      // The signature's refusal is what the caller needs to hear; recovery handles the rest.
    }
  }

  revoke(serial: string, reason: number, requester: string): Promise<Revocation> {
    return revokeCertificate(this.db, this.kms.audit, { serial, reason, requester });
  }

  async certificate(serial: string): Promise<CertificateRow> {
    const row = await this.db
      .selectFrom('certificates')
      .selectAll()
      .where('serial', '=', normalizeSerial(serial))
      .executeTakeFirst();
    if (!row) throw new KeywardError('notFound', `no certificate with serial ${serial}`);
    return row;
  }

  async certificates(opts: { limit?: number; status?: 'valid' | 'revoked' } = {}): Promise<CertificateRow[]> {
    let q = this.db
      .selectFrom('certificates')
      .selectAll()
      .orderBy('created_at', 'desc')
      .limit(opts.limit ?? 100);
    if (opts.status) q = q.where('status', '=', opts.status);
    return q.execute();
  }

  /** Serial reservations that never became certificates, newest first. */
  async reservations(opts: {
    state: 'reserved' | 'abandoned';
    limit?: number;
  }): Promise<{ serial: string; issuerId: string; profile: string; requester: string; createdAt: Date }[]> {
    const rows = await this.db
      .selectFrom('serial_reservations')
      .select(['serial', 'issuer_id', 'profile', 'requester', 'created_at'])
      .where('status', '=', opts.state)
      .orderBy('created_at', 'desc')
      .limit(opts.limit ?? 100)
      .execute();
    return rows.map((r) => ({
      serial: r.serial,
      issuerId: r.issuer_id,
      profile: r.profile,
      requester: r.requester,
      createdAt: r.created_at,
    }));
  }

  /** The chain to the current root, leaf first (what ACME serves by default). */
  async chainFor(row: Pick<CertificateRow, 'der' | 'issuer_id'>): Promise<string> {
    return (await this.chainsFor(row))[0]!;
  }

  /** Every chain for a certificate, leaf first: the one to the current root, then alternates. */
  async chainsFor(row: Pick<CertificateRow, 'der' | 'issuer_id'>): Promise<string[]> {
    const rows = await this.issuers();
    const issuer = rows.find((r) => r.id === row.issuer_id);
    if (!issuer) throw new KeywardError('notFound', `no issuer ${row.issuer_id}`);
    const chains = chainsFrom(issuer, rows, await this.registry.crossCertificates());
    return [chains.primary, ...chains.alternates].map((certs) => chainPem(row.der, certs));
  }
}

export interface NewIssuer {
  kind: 'root' | 'intermediate';
  parentId: string | null;
  /** null only for a root trusted without its key. */
  keyId: string | null;
  der: Uint8Array;
  state?: IssuerState;
  profiles?: string[];
  replaces?: string;
}

/** Records an issuer and announces it to every replica (in the caller's transaction). */
export async function insertIssuer(trx: Executor, issuer: NewIssuer): Promise<IssuerRow> {
  const cert = new x509.X509Certificate(new Uint8Array(issuer.der));
  // The identifier leaves name in their AKI: the certificate's own SKI (an adopted certificate's
  // may be made by another method), else RFC 5280 method 1.
  const ski = parseIssuerCertificate(issuer.der).keyIdentifier;
  const id = Buffer.from(createHash('sha256').update(issuer.der).digest()).toString('hex').slice(0, 16);
  const row = await trx
    .insertInto('issuers')
    .values({
      id,
      kind: issuer.kind,
      parent_id: issuer.parentId,
      key_id: issuer.keyId,
      certificate: issuer.der,
      subject: cert.subject,
      ski,
      not_before: cert.notBefore,
      not_after: cert.notAfter,
      state: issuer.state ?? 'active',
      profiles: JSON.stringify(issuer.profiles ?? []),
      replaces: issuer.replaces ?? null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await announceIssuerChange(trx, id);
  return row;
}
