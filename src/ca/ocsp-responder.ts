import { sql } from 'kysely';

import { bytesEqual } from '../core/bytes.ts';
import { events } from '../core/events.ts';
import { serialFromBytes } from '../core/serial.ts';
import { withLease } from '../db/lease.ts';
import type { Listen } from '../db/notifications.ts';
import type { Db, IssuerRow } from '../db/schema.ts';
import {
  buildOcspResponse,
  type CertId,
  certIdMatchesIssuer,
  type IssuerHashes,
  issuerHashes,
  makeCertId,
  type OcspCertStatus,
  ocspErrorResponse,
  type OcspErrorStatus,
  OcspRequestError,
  type OcspSingleResponse,
  parseOcspRequest,
} from './ocsp.ts';
import { OcspCache } from './ocsp-cache.ts';
import type { OcspSigners, Responder } from './ocsp-signers.ts';
import { REVOCATION_CHANNEL } from './revocation.ts';

/**
 * The OCSP responder (RFC 6960, profiled by RFC 5019). Answers come from `ocsp_responses`, signed
 * ahead of time by `refreshBatch`, so the common lookup (one SHA-1 CertID, no nonce) costs one
 * indexed read and no signature. Everything else is signed on the spot:
 * - a request with a nonce, when nonces are echoed (the answer is bound to that request);
 * - several CertIDs in one request (rare; RFC 5019 clients send one);
 * - a serial we never issued ("unknown": nothing to pre-sign, and caching it would let anyone fill
 *   the table);
 * - a certificate whose cached answer is missing, e.g. just issued or just revoked. That answer is
 *   then stored, so the next lookup is cached again.
 * Stored answers are written only while the certificate's status still matches (see `store`), so a
 * slow writer can never put a "good" back after a revocation.
 */

export interface OcspSettings {
  /** thisUpdate..nextUpdate of each answer. */
  validity: number;
  nonce: 'echo' | 'ignore';
  /**
   * False while no key can sign (a sealed root of trust): nonces are ignored (RFC 5019 2.1.2) so
   * stored answers serve, and a request no stored answer fits gets tryLater.
   */
  canSign?: () => boolean;
}

export type OcspAnswer =
  | { kind: 'error'; status: OcspErrorStatus; der: Uint8Array; reason: string }
  | {
      kind: 'response';
      der: Uint8Array;
      cached: boolean;
      thisUpdate: Date;
      nextUpdate: Date;
      nonce: boolean;
      /** The serial this answer is about, when it may be served again to the same request. */
      cacheableAs?: string;
    };

/** A signed answer as kept in memory: the same object on every hit. */
export type CachedOcspAnswer = Extract<OcspAnswer, { kind: 'response' }>;

function cacheKey(requestDer: Uint8Array): string {
  return Buffer.from(requestDer.buffer, requestDer.byteOffset, requestDer.byteLength).toString('latin1');
}

interface KnownIssuer {
  row: IssuerRow;
  hashes: IssuerHashes;
}

const ISSUER_RELOAD_MS = 60_000;
const REFRESH_LEASE_TTL_MS = 60_000;

type DbStatus = 'valid' | 'revoked';

function certStatus(status: DbStatus, revokedAt: Date | null, reason: number | null): OcspCertStatus {
  return status === 'revoked'
    ? { kind: 'revoked', revokedAt: revokedAt ?? new Date(0), reason: reason ?? undefined }
    : { kind: 'good' };
}

const CACHE_ENTRIES = 100_000;
const CACHE_MAX_AGE_MS = 60_000;

export class OcspResponder {
  private issuers: KnownIssuer[] = [];
  private loadedAt = 0;
  private readonly cache = new OcspCache<CachedOcspAnswer>(CACHE_ENTRIES, CACHE_MAX_AGE_MS);
  /** The cache is used only while revocations reach it (see follow). */
  private following = false;

  constructor(
    private readonly db: Db,
    private readonly signers: OcspSigners,
    private readonly settings: OcspSettings,
    private readonly holder: string,
    /** Where answers are stored: a lost one is signed again by the next refresh, so no flush is awaited. */
    private readonly storeDb: Db = db,
  ) {}

  /** Issuers that issue leaves, with their CertID hashes; reloaded now and then for new intermediates. */
  private async knownIssuers(force = false): Promise<KnownIssuer[]> {
    if (force ? Date.now() - this.loadedAt > 5_000 : Date.now() - this.loadedAt > ISSUER_RELOAD_MS) {
      const rows = await this.db.selectFrom('issuers').selectAll().where('kind', '=', 'intermediate').execute();
      this.issuers = rows.map((row) => ({ row, hashes: issuerHashes(row.certificate) }));
      this.loadedAt = Date.now();
    }
    return this.issuers;
  }

  /**
   * An issuer was added or changed (its notice): the next request reloads them, so the first one
   * for a new intermediate isn't held to the reload throttle and answered "unauthorized".
   */
  issuersChanged(): void {
    this.loadedAt = 0;
  }

  private async issuerOf(certId: CertId): Promise<KnownIssuer | undefined> {
    const match = (list: KnownIssuer[]) => list.find((i) => certIdMatchesIssuer(certId, i.hashes));
    return match(await this.knownIssuers()) ?? match(await this.knownIssuers(true));
  }

  /**
   * Keeps the in-memory cache true to revocations: this process's at once, other replicas' through
   * the database's notifications. Returns the function that stops following.
   */
  async follow(listen: Listen): Promise<() => Promise<void>> {
    const local = events.certificateRevoked.subscribe((e) => this.cache.forget(e.serial));
    try {
      const remote = await listen(REVOCATION_CHANNEL, {
        message: (serial) => this.cache.forget(serial),
        ready: () => {
          this.cache.clear();
          this.following = true;
        },
        lost: () => {
          this.following = false;
          this.cache.clear();
        },
      });
      return async () => {
        this.following = false;
        local();
        await remote();
      };
    } catch (err) {
      local();
      throw err;
    }
  }

  /**
   * The answer kept in memory for exactly these request bytes, if any: no parse, no query, no
   * promise, so the HTTP listener can serve it before routing (src/http/ocsp-get.ts). The bytes are
   * the key, so a CertID hashed with SHA-256 never meets an answer to the SHA-1 one.
   */
  fromMemory(requestDer: Uint8Array): CachedOcspAnswer | undefined {
    if (!this.following) return undefined;
    return this.cache.get(cacheKey(requestDer), Date.now());
  }

  /** Answers from memory when this exact request was answered from a pre-signed answer before. */
  async answer(requestDer: Uint8Array): Promise<OcspAnswer> {
    if (!this.following) return this.lookUp(requestDer);
    const key = cacheKey(requestDer);
    const now = Date.now();
    const hit = this.cache.get(key, now);
    if (hit) return hit;
    const generation = this.cache.generation;
    const answer = await this.lookUp(requestDer);
    if (answer.kind === 'response' && answer.cacheableAs !== undefined)
      // Served again from memory, it is a cached answer whatever it was this time.
      this.cache.set(key, answer.cacheableAs, { ...answer, cached: true }, now, generation);
    return answer;
  }

  private async lookUp(requestDer: Uint8Array): Promise<OcspAnswer> {
    let parsed;
    try {
      parsed = parseOcspRequest(requestDer);
    } catch (err) {
      if (err instanceof OcspRequestError)
        return {
          kind: 'error',
          status: 'malformedRequest',
          der: ocspErrorResponse('malformedRequest'),
          reason: err.message,
        };
      throw err;
    }
    const matched: KnownIssuer[] = [];
    for (const certId of parsed.certIds) {
      const issuer = await this.issuerOf(certId);
      // RFC 6960 2.3: "unauthorized" when we are not a responder for that issuer.
      if (!issuer)
        return {
          kind: 'error',
          status: 'unauthorized',
          der: ocspErrorResponse('unauthorized'),
          reason: 'issuer is not ours',
        };
      matched.push(issuer);
    }
    // One response has one signer, and a delegated signer speaks for its own issuer only.
    const issuer = matched[0]!;
    if (matched.some((m) => m.row.id !== issuer.row.id)) {
      return {
        kind: 'error',
        status: 'unauthorized',
        der: ocspErrorResponse('unauthorized'),
        reason: 'CertIDs of several issuers in one request',
      };
    }
    const live = this.settings.canSign?.() ?? true;
    const nonce = this.settings.nonce === 'echo' && live ? parsed.nonce : undefined;

    if (parsed.certIds.length === 1 && nonce === undefined) {
      const hit = await this.cached(issuer, parsed.certIds[0]!);
      if (hit) return hit;
    }
    if (!live)
      return {
        kind: 'error',
        status: 'tryLater',
        der: ocspErrorResponse('tryLater'),
        reason: 'sealed: stored answers only',
      };
    return this.signLive(issuer, parsed.certIds, nonce);
  }

  /** A stored answer, if there is a fresh one the client can use byte for byte. */
  private async cached(issuer: KnownIssuer, certId: CertId): Promise<OcspAnswer | undefined> {
    // Stored answers carry our canonical CertID encoding; a client that encoded it otherwise (e.g.
    // absent hash parameters) may compare bytes, so it gets a live answer echoing its own.
    if (!bytesEqual(makeCertId(issuer.hashes, certId.hashAlgorithm, certId.serialNumber).raw, certId.raw))
      return undefined;
    const r = await sql<{
      der: Uint8Array;
      der_sha256: Uint8Array | null;
      this_update: Date;
      next_update: Date;
      fresh: boolean;
    }>`
      SELECT r.der, r.der_sha256, r.this_update, r.next_update, r.next_update > now() AS fresh
      FROM ocsp_responses r JOIN certificates c ON c.serial = r.serial
      WHERE r.serial = ${serialFromBytes(certId.serialNumber)} AND c.issuer_id = ${issuer.row.id}`.execute(this.db);
    const row = r.rows[0];
    if (!row?.fresh) return undefined;
    const der = certId.hashAlgorithm === 'sha1' ? row.der : row.der_sha256;
    if (!der) return undefined;
    return {
      kind: 'response',
      der: new Uint8Array(der),
      cached: true,
      thisUpdate: new Date(row.this_update),
      nextUpdate: new Date(row.next_update),
      nonce: false,
      cacheableAs: serialFromBytes(certId.serialNumber),
    };
  }

  private async signLive(issuer: KnownIssuer, certIds: CertId[], nonce: Uint8Array | undefined): Promise<OcspAnswer> {
    const serials = certIds.map((c) => serialFromBytes(c.serialNumber));
    const rows = await this.db
      .selectFrom('certificates')
      .select(['serial', 'issuer_id', 'status', 'revoked_at', 'revocation_reason'])
      .where('serial', 'in', serials)
      .where('issuer_id', '=', issuer.row.id)
      .execute();
    // A request for serials we never issued gets the unsigned "unauthorized" answer (RFC 5019
    // 2.2.3), as Boulder gives: signing "unknown" for each made-up serial would let anyone spend a
    // signature and an audit event per request.
    if (rows.length === 0)
      return {
        kind: 'error',
        status: 'unauthorized',
        der: ocspErrorResponse('unauthorized'),
        reason: 'no certificate of this issuer has these serials',
      };
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    const now = await this.dbNow();
    let responder = await this.signers.responderFor(issuer.row, now);
    // No responder certificate yet (an intermediate made moments ago, before the background work
    // made one, e.g. while this replica doesn't hear issuer changes): make it now, once.
    if (!responder && (await this.signers.ensure(issuer.row)))
      responder = await this.signers.responderFor(issuer.row, now);
    if (!responder)
      return { kind: 'error', status: 'tryLater', der: ocspErrorResponse('tryLater'), reason: 'no OCSP signer yet' };
    const { thisUpdate, nextUpdate } = this.window(now, responder);
    const responses: OcspSingleResponse[] = certIds.map((certId, i) => {
      const row = bySerial.get(serials[i]!);
      // "unknown" (RFC 6960 2.2): the issuer is ours, the serial is not one it issued.
      const status: OcspCertStatus = row
        ? certStatus(row.status, row.revoked_at, row.revocation_reason)
        : { kind: 'unknown' };
      return { certId, status, thisUpdate, nextUpdate };
    });
    const der = await buildOcspResponse({
      responder: { certificate: responder.certificate, signer: responder.signer },
      producedAt: now,
      responses,
      nonce,
    });

    const only = bySerial.get(serials[0]!);
    if (certIds.length === 1 && nonce === undefined && only) {
      const certId = certIds[0]!;
      const canonical = bytesEqual(
        makeCertId(issuer.hashes, certId.hashAlgorithm, certId.serialNumber).raw,
        certId.raw,
      );
      if (canonical) {
        await this.store(only.serial, certId.hashAlgorithm, only.status, der, thisUpdate, nextUpdate);
        return { kind: 'response', der, cached: false, thisUpdate, nextUpdate, nonce: false, cacheableAs: only.serial };
      }
    }
    return { kind: 'response', der, cached: false, thisUpdate, nextUpdate, nonce: nonce !== undefined };
  }

  private window(now: Date, responder: Responder): { thisUpdate: Date; nextUpdate: Date } {
    // An answer must not outlive the certificate that vouches for its signature.
    const nextUpdate = new Date(Math.min(now.getTime() + this.settings.validity, responder.notAfter.getTime()));
    return { thisUpdate: now, nextUpdate };
  }

  private async dbNow(): Promise<Date> {
    const r = await sql<{ now: Date }>`SELECT date_trunc('second', clock_timestamp()) AS now`.execute(this.db);
    return new Date(r.rows[0]!.now);
  }

  /**
   * Stores an answer only if the certificate still has the status it states. FOR SHARE waits for a
   * revocation in flight and then re-reads the row, so the INSERT sees "revoked" and writes nothing;
   * the revocation itself deletes any older answer.
   */
  private async store(
    serial: string,
    hash: 'sha1' | 'sha256',
    status: DbStatus,
    der: Uint8Array,
    thisUpdate: Date,
    nextUpdate: Date,
  ): Promise<void> {
    if (hash === 'sha1') {
      await sql`
        INSERT INTO ocsp_responses (serial, der, der_sha256, this_update, next_update, status)
        SELECT c.serial, ${der}, NULL, ${thisUpdate}, ${nextUpdate}, c.status FROM certificates c
        WHERE c.serial = ${serial} AND c.status = ${status} FOR SHARE
        ON CONFLICT (serial) DO UPDATE SET der = excluded.der, der_sha256 = NULL, this_update = excluded.this_update,
          next_update = excluded.next_update, status = excluded.status
        WHERE ocsp_responses.this_update <= excluded.this_update`.execute(this.storeDb);
    } else {
      // The SHA-256 answer rides on the SHA-1 row and is valid at least as long as it (its
      // nextUpdate is not earlier); a refresh of the row clears it.
      await sql`
        UPDATE ocsp_responses r SET der_sha256 = ${der} FROM certificates c
        WHERE r.serial = ${serial} AND c.serial = r.serial AND c.status = ${status} AND r.status = ${status}
          AND r.next_update <= ${nextUpdate}`.execute(this.storeDb);
    }
  }

  /** `store` for many SHA-1 answers at once (the pre-signing batch): one statement. */
  private async storeMany(
    answers: { serial: string; status: DbStatus; der: Uint8Array; thisUpdate: Date; nextUpdate: Date }[],
  ): Promise<void> {
    if (answers.length === 0) return;
    await sql`
      INSERT INTO ocsp_responses (serial, der, der_sha256, this_update, next_update, status)
      SELECT c.serial, decode(a.der, 'hex'), NULL, a.this_update, a.next_update, c.status
      FROM unnest(${answers.map((a) => a.serial)}::text[], ${answers.map((a) => Buffer.from(a.der).toString('hex'))}::text[],
        ${answers.map((a) => a.thisUpdate)}::timestamptz[], ${answers.map((a) => a.nextUpdate)}::timestamptz[],
        ${answers.map((a) => a.status)}::text[]) AS a (serial, der, this_update, next_update, status)
      JOIN certificates c ON c.serial = a.serial AND c.status = a.status
      ORDER BY c.serial FOR SHARE OF c
      ON CONFLICT (serial) DO UPDATE SET der = excluded.der, der_sha256 = NULL, this_update = excluded.this_update,
        next_update = excluded.next_update, status = excluded.status
      WHERE ocsp_responses.this_update <= excluded.this_update`.execute(this.storeDb);
  }

  /**
   * Pre-signs one batch: unexpired certificates with no stored answer, or one past half its
   * validity (RFC 5019 6.1 style refresh well before nextUpdate). Returns how many were signed, or
   * undefined when another replica holds the lease.
   */
  async refreshBatch(limit = 200): Promise<number | undefined> {
    const half = `${Math.floor(this.settings.validity / 2)} milliseconds`;
    return withLease(this.db, 'ocsp-refresh', this.holder, REFRESH_LEASE_TTL_MS, async () => {
      const due = await sql<{
        serial: string;
        issuer_id: string;
        status: DbStatus;
        revoked_at: Date | null;
        revocation_reason: number | null;
      }>`
        SELECT c.serial, c.issuer_id, c.status, c.revoked_at, c.revocation_reason
        FROM certificates c LEFT JOIN ocsp_responses r ON r.serial = c.serial
        WHERE c.not_after > now() AND (r.serial IS NULL OR r.next_update < now() + ${half}::interval)
        ORDER BY c.not_after LIMIT ${limit}`.execute(this.db);
      if (due.rows.length === 0) return 0;
      const issuers = await this.knownIssuers(true);
      const now = await this.dbNow();
      // Signed together, so their audit events share group commits, and stored in one statement.
      const answers = await Promise.all(
        due.rows.map(async (row) => {
          const issuer = issuers.find((i) => i.row.id === row.issuer_id);
          if (!issuer) return undefined;
          const responder = await this.signers.responderFor(issuer.row, now);
          if (!responder) return undefined;
          const { thisUpdate, nextUpdate } = this.window(now, responder);
          const certId = makeCertId(
            issuer.hashes,
            'sha1',
            Buffer.from(row.serial.length % 2 ? `0${row.serial}` : row.serial, 'hex'),
          );
          const der = await buildOcspResponse({
            responder: { certificate: responder.certificate, signer: responder.signer },
            producedAt: now,
            responses: [
              { certId, status: certStatus(row.status, row.revoked_at, row.revocation_reason), thisUpdate, nextUpdate },
            ],
          });
          return { serial: row.serial, status: row.status, der, thisUpdate, nextUpdate };
        }),
      );
      const signed = answers.filter((a) => a !== undefined);
      await this.storeMany(signed);
      return signed.length;
    });
  }
}
