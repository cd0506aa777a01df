import { randomUUID } from 'node:crypto';

import { sql } from 'kysely';

import { withLease } from '../db/lease.ts';
import type { Db, IssuerRow } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import type { Signer } from '../kms/signer.ts';
import { issuerKey } from './issuers.ts';
import { buildOcspSignerCertificate } from './ocsp-signer-cert.ts';
import { randomSerial } from './serial.ts';

/**
 * The key and certificate that sign OCSP responses for one issuer. Delegated by default: a
 * short-lived responder certificate (EKU OCSPSigning, ocsp-nocheck) whose key the hierarchy wraps
 * like any CA key; the issuer key then only signs that certificate once in a while.
 */
export interface Responder {
  issuerId: string;
  certificate: Uint8Array;
  signer: Signer;
  notAfter: Date;
}

export interface OcspSignerSettings {
  mode: 'delegated' | 'issuer';
  lifetime: number;
}

const BACKDATE_MS = 60_000;
const LEASE_TTL_MS = 60_000;
/**
 * How long a responder found in the database is used before looking again. A newer one (minted by
 * any replica at half the old one's life) is picked up within this; the old one stays valid for
 * half its lifetime after that, so using it a little longer is harmless. Pre-signing an answer
 * for each new certificate asked the database every time.
 */
const RECHECK_MS = 30_000;

export class OcspSigners {
  /** Per process; the database row is the truth, this only saves an unwrap per response. */
  private readonly cache = new Map<string, { id: string; responder: Responder; checkedAt: number }>();

  constructor(
    private readonly db: Db,
    private readonly kms: KeyHierarchy,
    private readonly settings: OcspSignerSettings,
    private readonly holder: string,
    private readonly principal: string,
  ) {}

  /** The newest valid responder for an issuer, or undefined when none exists yet (see `ensure`). */
  async responderFor(issuer: IssuerRow, now: Date): Promise<Responder | undefined> {
    if (this.settings.mode === 'issuer') {
      const cached = this.cache.get(issuer.id);
      if (cached) return cached.responder;
      const signer = await this.kms.signer(issuerKey(issuer), 'sign-ocsp', this.principal);
      const responder = { issuerId: issuer.id, certificate: issuer.certificate, signer, notAfter: issuer.not_after };
      this.cache.set(issuer.id, { id: issuer.id, responder, checkedAt: now.getTime() });
      return responder;
    }
    const recent = this.cache.get(issuer.id);
    if (recent && now.getTime() - recent.checkedAt < RECHECK_MS && recent.responder.notAfter > now)
      return recent.responder;
    const row = await this.db
      .selectFrom('ocsp_signers')
      .select(['id', 'key_id', 'certificate', 'not_after'])
      .where('issuer_id', '=', issuer.id)
      .where('not_after', '>', now)
      .orderBy('not_after', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!row) return undefined;
    const cached = this.cache.get(issuer.id);
    if (cached?.id === row.id) {
      cached.checkedAt = now.getTime();
      return cached.responder;
    }
    const signer = await this.kms.signer(row.key_id, 'sign-ocsp', this.principal);
    const responder = { issuerId: issuer.id, certificate: row.certificate, signer, notAfter: row.not_after };
    this.cache.set(issuer.id, { id: row.id, responder, checkedAt: now.getTime() });
    return responder;
  }

  /**
   * Creates a responder certificate when the newest one is past half its life (or there is none),
   * under a lease so that replicas don't each mint one. Returns whether one was created.
   */
  async ensure(issuer: IssuerRow): Promise<boolean> {
    if (this.settings.mode === 'issuer') return false;
    const lifetime = this.settings.lifetime;
    const fresh = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ocsp_signers
      WHERE issuer_id = ${issuer.id} AND not_after > now() + ${`${Math.floor(lifetime / 2)} milliseconds`}::interval`.execute(
      this.db,
    );
    if (fresh.rows[0]!.n > 0) return false;
    // No certificate beyond the issuer's own life; near its end there is nothing left to renew.
    if (issuer.not_after.getTime() - Date.now() < 2 * BACKDATE_MS) return false;
    // Three separate units of work, not one transaction: creating a key appends to the audit chain
    // and signing locks the issuer's key row, and taking those two locks in the opposite order to
    // every other signer would deadlock with a concurrent issuance. A crash in between leaves an
    // unused, audited responder key and nothing else.
    const created = await withLease(this.db, `ocsp-signer:${issuer.id}`, this.holder, LEASE_TTL_MS, async () => {
      // Re-check under the lease: another replica may have just finished.
      const again = await sql<{ n: number; now: Date }>`
        SELECT (SELECT count(*)::int FROM ocsp_signers WHERE issuer_id = ${issuer.id}
                AND not_after > now() + ${`${Math.floor(lifetime / 2)} milliseconds`}::interval) AS n,
               date_trunc('second', now()) AS now`.execute(this.db);
      if (again.rows[0]!.n > 0) return false;
      const now = new Date(again.rows[0]!.now);
      const key = await this.kms.createKey(this.db, { usage: 'ocsp', alg: 'ecdsa-p256', principal: this.principal });
      const issuerSigner = await this.kms.signer(issuerKey(issuer), 'sign-certificate', this.principal);
      const notBefore = new Date(now.getTime() - BACKDATE_MS);
      const notAfter = new Date(Math.min(now.getTime() + lifetime, issuer.not_after.getTime()));
      const certificate = await buildOcspSignerCertificate({
        issuer: { certificate: issuer.certificate, signer: issuerSigner },
        subjectPublicKeyInfo: new Uint8Array(key.publicKey.export({ type: 'spki', format: 'der' })),
        serial: Buffer.from(randomSerial(), 'hex'),
        notBefore,
        notAfter,
        commonName: `Keyward OCSP Responder ${issuer.id}`,
      });
      await this.db
        .insertInto('ocsp_signers')
        .values({
          id: randomUUID(),
          issuer_id: issuer.id,
          key_id: key.id,
          certificate,
          not_before: notBefore,
          not_after: notAfter,
        })
        .execute();
      return true;
    });
    // This replica uses the new responder from its next answer on.
    if (created === true) this.cache.delete(issuer.id);
    return created === true;
  }
}
