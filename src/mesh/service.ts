import type { IssuedCertificate } from '../ca/authority.ts';
import { parseCsr, type ParsedCsr } from '../ca/csr.ts';
import { normalizeSans } from '../ca/names.ts';
import { type Clock, systemClock } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import { sanCount, type SanSet } from '../core/identifiers.ts';
import type { Db } from '../db/schema.ts';
import type { Issuance, IssuanceRequest, Requester } from '../issuance/index.ts';
import { authenticatePeer } from './peer.ts';
import { consumableToken, consumeToken, recordTokenSerial, returnToken, verifyBootstrapToken } from './tokens.ts';

export interface MeshCertificate {
  serial: string;
  /** Leaf first, then the intermediate. */
  certificate: string;
  /** The roots (PEM), for verifying peers. */
  caBundle: string;
  notBefore: string;
  notAfter: string;
}

function csrOf(value: unknown): ParsedCsr {
  if (typeof value !== 'string' || value.length === 0)
    throw new KeywardError('malformed', 'the body needs "csr": a PEM certificate request');
  return parseCsr(value);
}

/** The names to certify: the CSR's, which must all be granted, or all granted names when it asks none. */
function namesFor(csr: ParsedCsr, granted: SanSet, what: string): SanSet {
  const asked = normalizeSans(csr.sans);
  if (sanCount(asked) === 0) return granted;
  for (const type of ['dns', 'ip', 'uri', 'email'] as const) {
    const extra = asked[type].filter((n) => !granted[type].includes(n));
    if (extra.length > 0)
      throw new KeywardError(
        'rejectedIdentifier',
        `the CSR asks for ${type} ${extra.join(', ')}, which ${what} does not authorize (authorized: ${[...granted.dns, ...granted.ip, ...granted.uri, ...granted.email].join(', ')})`,
      );
  }
  return asked;
}

/** What the mesh front end uses; the issuance decision path does the rest. */
export interface MeshDeps {
  /** Tokens and the certificates presented for renewal. */
  db: Db;
  issuance: Issuance;
  /** What every bootstrap token must name as its audience: the sign endpoint's public URL. */
  audience: string;
  /** The roots (PEM) a workload trusts its peers by. */
  roots(): Promise<string>;
  clock?: Clock;
}

/**
 * Mesh issuance: bootstrap by one-time token (/v1/sign) and renewal by the current certificate
 * (/v1/renew). Both translate into an IssuanceRequest; src/issuance decides (profile, names,
 * policy, rate limits, extensions, the issuer) and signs.
 */
export class MeshService {
  private readonly clock: Clock;

  constructor(private readonly deps: MeshDeps) {
    this.clock = deps.clock ?? systemClock;
  }

  private request(csr: ParsedCsr, sans: SanSet, profile: string, requester: Requester): IssuanceRequest {
    return {
      requester,
      names: sans,
      publicKey: {
        spki: csr.subjectPublicKeyInfo,
        keyType: csr.keyType,
        ...(csr.rsaBits !== undefined ? { rsaBits: csr.rsaBits } : {}),
      },
      profile,
      extensions: csr.extensions,
    };
  }

  private async render(issued: IssuedCertificate): Promise<MeshCertificate> {
    return {
      serial: issued.serial,
      certificate: issued.chainPem,
      caBundle: await this.deps.roots(),
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
    };
  }

  /** POST /v1/sign {csr, token}. The token is burnt only once everything else has passed. */
  async sign(body: Record<string, unknown>): Promise<MeshCertificate> {
    if (typeof body.token !== 'string' || body.token.length === 0)
      throw new KeywardError('malformed', 'the body needs "token": a bootstrap token');
    const now = this.clock.now();
    const db = this.deps.db;
    const token = await verifyBootstrapToken(db, body.token, { audience: this.deps.audience, now });
    const csr = csrOf(body.csr);
    const sans = namesFor(csr, token.sans, 'the token');
    if (!this.deps.issuance.profiles.has(token.profile))
      throw new KeywardError(
        'invalidProfile',
        `the token names profile "${token.profile}", which this CA no longer has`,
      );
    // Every check first (reads only); then the token is spent in the serial reservation's
    // transaction, given back if the signature is refused, and tied to its certificate in the
    // transaction that records it: spending and issuing succeed or fail together.
    await consumableToken(db, token.jti, now);
    const decision = await this.deps.issuance.decide(
      this.request(csr, sans, token.profile, { kind: 'mesh-token', jti: token.jti }),
    );
    const issued = await this.deps.issuance.sign(decision, {
      onReserved: (trx) => consumeToken(trx, token.jti, now),
      onAbandoned: (trx) => returnToken(trx, token.jti),
      onRecorded: (trx, serial) => recordTokenSerial(trx, token.jti, serial),
    });
    return this.render(issued);
  }

  /**
   * POST /v1/renew {csr}, authenticated by the current certificate over mTLS. The CSR proves
   * possession of the key to certify; a new key is expected (the agent always rotates) but the
   * same key is accepted. The identity is the current certificate's: same names (or a subset the
   * CSR asks for), same profile, a fresh profile-default lifetime. Only mesh certificates renew
   * here, so a certificate from another path (ACME) cannot extend itself without validation.
   */
  async renew(peerDer: Uint8Array | undefined, body: Record<string, unknown>): Promise<MeshCertificate> {
    const now = this.clock.now();
    const current = await authenticatePeer(this.deps.db, peerDer, now);
    if (!current.requester.startsWith('mesh:'))
      throw new KeywardError(
        'unauthorized',
        `certificate ${current.serial} was not issued by the mesh flow and cannot renew here`,
      );
    const csr = csrOf(body.csr);
    const sans = namesFor(csr, current.sans, `the current certificate (serial ${current.serial})`);
    const issued = await this.deps.issuance.issue(
      this.request(csr, sans, current.profile, { kind: 'mesh-renew', serial: current.serial }),
    );
    return this.render(issued);
  }
}
