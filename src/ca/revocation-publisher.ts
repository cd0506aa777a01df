import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import type { Config } from '../config/load.ts';
import type { Db } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import { type CrlPublisherDeps, publishDue, type PublishRound } from './crl-publisher.ts';
import { OcspResponder } from './ocsp-responder.ts';
import { OcspSigners } from './ocsp-signers.ts';

/** What the revocation machinery needs (an AppContext has it; ca/ depends on nothing above it). */
export interface RevocationDeps {
  config: Pick<Config, 'httpBaseUrl' | 'revocation'>;
  database: { db: Db; asyncCommit: Db };
  kms: KeyHierarchy;
}

/**
 * The revocation machinery of one process, wired from the configuration: CRL publishing, OCSP
 * signers and the responder. Holds no state that matters beyond caches; `tick` is the background
 * work each replica runs, and the leases inside decide which replica actually does each piece.
 */
export class RevocationPublisher {
  readonly holder = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly signers: OcspSigners;
  readonly responder: OcspResponder;
  readonly crl: CrlPublisherDeps;

  private readonly db: Db;

  constructor(ctx: RevocationDeps, principal = 'keyward') {
    const r = ctx.config.revocation;
    const db = ctx.database.db;
    this.db = db;
    this.signers = new OcspSigners(
      db,
      ctx.kms,
      { mode: r.ocspSigner, lifetime: r.ocspSignerLifetime },
      this.holder,
      principal,
    );
    this.responder = new OcspResponder(
      db,
      this.signers,
      { validity: r.ocspValidity, nonce: r.ocspNonce, canSign: () => !ctx.kms.sealed },
      this.holder,
      ctx.database.asyncCommit,
    );
    this.crl = {
      db,
      kms: ctx.kms,
      settings: { baseUrl: ctx.config.httpBaseUrl, crlShards: r.crlShards, crlValidity: r.crlValidity },
      holder: this.holder,
      principal,
    };
  }

  /** Publishes every due CRL (or all, with force). */
  publishCrls(opts: { force?: boolean } = {}): Promise<PublishRound> {
    return publishDue(this.crl, opts);
  }

  /** Responder certificates that are missing or past half-life, for every live intermediate. */
  async ensureSigners(): Promise<void> {
    const issuers = await this.db
      .selectFrom('issuers')
      .selectAll()
      .where('kind', '=', 'intermediate')
      .where('not_after', '>', new Date())
      .where('state', '!=', 'retired')
      .orderBy('created_at')
      .execute();
    for (const issuer of issuers) await this.signers.ensure(issuer);
  }

  /** Pre-signs OCSP answers, a bounded number of batches per call so one tick can't run forever. */
  async refreshOcsp(maxBatches = 20): Promise<number> {
    let total = 0;
    for (let i = 0; i < maxBatches; i++) {
      const n = await this.refreshOnce();
      if (n === undefined || n === 0) break;
      total += n;
    }
    return total;
  }

  private refreshOnce(): Promise<number | undefined> {
    return this.responder.refreshBatch();
  }

  /** One round of background work; each step is independent, so one failing doesn't stop the rest. */
  async tick(onError: (step: string, err: unknown) => void): Promise<void> {
    const steps: [string, () => Promise<unknown>][] = [
      ['ocsp-signers', () => this.ensureSigners()],
      ['crl-publish', () => this.publishCrls()],
      ['ocsp-refresh', () => this.refreshOcsp()],
    ];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        onError(name, err);
      }
    }
  }
}
