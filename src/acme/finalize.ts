import type { Context } from 'hono';
import type { JWK } from 'jose';

import { parseCsr, type ParsedCsr } from '../ca/csr.ts';
import { bytesEqual } from '../core/bytes.ts';
import { crashPoint } from '../core/crash-points.ts';
import { asKeywardError, KeywardError, problemDocument } from '../core/errors.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import { fragment } from '../db/precompiled.ts';
import type { Decision } from '../issuance/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { decodeB64url } from './ids.ts';
import { accountSpki, requireAccount, verifyRequest } from './jws.ts';
import {
  claimToFinalize,
  orderResponse,
  type OrderToFinalize,
  ownedOrder,
  releaseClaim,
  resolveProfile,
} from './orders.ts';
import { acmeRequester } from './requester.ts';
import { type OrderRow, orderStatus } from './views.ts';

const badCsr = (detail: string) => new KeywardError('badCSR', detail);

/** RFC 8555 §7.4: the CSR must ask for exactly the order's names; the CN, if any, is one of them. */
function checkNames(csr: ParsedCsr, identifiers: AcmeIdentifierJson[]): void {
  if (csr.sans.uri.length > 0 || csr.sans.email.length > 0)
    throw badCsr('CSR may only request DNS names and IP addresses');
  const want = new Set(identifiers.map((i) => `${i.type}:${i.value}`));
  const got = new Set([...csr.sans.dns.map((n) => `dns:${n.toLowerCase()}`), ...csr.sans.ip.map((n) => `ip:${n}`)]);
  if (csr.commonName !== undefined) {
    const cn = csr.commonName.toLowerCase();
    const asName = want.has(`dns:${cn}`)
      ? `dns:${cn}`
      : want.has(`ip:${csr.commonName}`)
        ? `ip:${csr.commonName}`
        : undefined;
    if (!asName) throw badCsr(`CSR commonName ${JSON.stringify(csr.commonName)} is not one of the order's identifiers`);
    got.add(asName);
  }
  const missing = [...want].filter((n) => !got.has(n));
  const extra = [...got].filter((n) => !want.has(n));
  if (missing.length || extra.length) {
    const show = (l: string[]) => l.map((n) => n.slice(n.indexOf(':') + 1)).join(', ');
    throw badCsr(
      `CSR names must equal the order's identifiers` +
        (missing.length ? `; missing: ${show(missing)}` : '') +
        (extra.length ? `; not in the order: ${show(extra)}` : ''),
    );
  }
}

/** The CSR checks and the issuance decision for a claimed order; nothing is written. */
async function decideFinalize(
  deps: AcmeDeps,
  account: AccountRow,
  order: OrderToFinalize,
  p: Record<string, unknown> | undefined,
  now: Date,
): Promise<Decision> {
  if (!p || typeof p.csr !== 'string') throw new KeywardError('malformed', 'finalize needs {"csr": <base64url DER>}');
  const der = decodeB64url(p.csr);
  if (!der || der.length === 0) throw badCsr('"csr" must be unpadded base64url DER');
  if (der[0] === 0x2d) throw badCsr('"csr" must be DER, not PEM');
  const csr = parseCsr(new Uint8Array(der));
  checkNames(csr, order.identifiers);
  if (bytesEqual(accountSpki(account.jwk as JWK), csr.subjectPublicKeyInfo)) {
    throw badCsr('The certificate key must not be the account key');
  }
  // The profile may have been withdrawn since the order was placed (profiles draft §4).
  const profile = resolveProfile(deps, order.profile);
  let lifetimeMs: number | undefined;
  if (order.not_after) {
    lifetimeMs = order.not_after.getTime() - now.getTime();
    if (lifetimeMs <= 0) throw new KeywardError('malformed', 'The requested notAfter has passed');
  }
  // Every rule (name policy again, certificates per name, CAA freshness) on what the claim read.
  return deps.issuance.decide({
    requester: acmeRequester(deps.urls, account),
    names: {
      dns: order.identifiers.filter((i) => i.type === 'dns').map((i) => i.value),
      ip: order.identifiers.filter((i) => i.type === 'ip').map((i) => i.value),
      uri: [],
      email: [],
    },
    ...(csr.commonName !== undefined ? { commonName: csr.commonName.toLowerCase() } : {}),
    publicKey: {
      spki: csr.subjectPublicKeyInfo,
      keyType: csr.keyType,
      ...(csr.rsaBits !== undefined ? { rsaBits: csr.rsaBits } : {}),
    },
    profile: profile.name,
    ...(lifetimeMs !== undefined ? { lifetimeMs } : {}),
    extensions: csr.extensions,
    ...(order.replaces ? { replaces: order.replaces } : {}),
    gathered: { nameCounters: order.name_counters, proofs: order.proofs },
  });
}

// Finalize's part of the statement that records the certificate (IssueRequest.recordWith): a
// fragment, so that statement is built and compiled once per process (db/precompiled.ts).
const orderTurnsValid = fragment((db, serial: string, orderId: string, now: Date) =>
  db
    .updateTable('acme_orders')
    .set({ status: 'valid', certificate_serial: serial, updated_at: now })
    .where('id', '=', orderId)
    .where('status', '=', 'processing')
    .returningAll(),
);

/**
 * Finalize: a conditional ready→processing update picks exactly one of concurrent requests and
 * reads what the decision needs (one statement); a CSR or decision that is refused turns the order
 * ready again, so the client can fix it and finalize again.
 */
export async function finalize(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  const orderId = c.req.param('id')!;
  const now = deps.clock.now();
  // Not waited for: the reservation commits after it, and its flush makes the claim durable too
  // (WAL order); a claim lost in a crash before that leaves the order ready, with nothing signed.
  const order = await claimToFinalize(deps.asyncCommit, { account, orderId, now });
  if (!order) {
    const current = await ownedOrder(deps.db, account, orderId);
    throw new KeywardError('orderNotReady', `Order is ${orderStatus(current, now)}, not ready`);
  }
  let decision: Decision;
  try {
    decision = await decideFinalize(deps, account, order, req.payload, now);
  } catch (err) {
    await releaseClaim(deps.db, order.id, deps.clock.now());
    throw err;
  }

  crashPoint('order-claimed', `acme:${account.id}`);
  let done: OrderRow | undefined;
  try {
    const issued = await deps.issuance.sign(decision, {
      // The certificate, its reservation and the order turning valid: one statement.
      recordWith: (serial) => orderTurnsValid(serial, order.id, deps.clock.now()),
    });
    done = issued.linked?.[0] as OrderRow | undefined;
    if (done)
      deps.recentCertificates.set(issued.serial, {
        account_id: done.account_id,
        der: issued.der,
        issuer_id: issued.issuerId,
      });
  } catch (err) {
    const prob = asKeywardError(err);
    if (prob.status >= 500)
      deps.log.error(
        { err: err instanceof Error ? err.stack : String(err), order: order.id },
        'issuing for an ACME order failed',
      );
    await deps.db
      .updateTable('acme_orders')
      .set({ status: 'invalid', error: JSON.stringify(problemDocument(prob)), updated_at: deps.clock.now() })
      .where('id', '=', order.id)
      .where('status', '=', 'processing')
      .execute();
    throw prob;
  }
  if (!done) throw new Error(`order ${order.id} was not recorded as valid with its certificate`);
  return orderResponse(deps, done, 200, { Location: deps.urls.order(order.id) });
}
