import type { Context } from 'hono';
import type { JWK } from 'jose';
import { sql } from 'kysely';

import { parseCsr, type ParsedCsr } from '../ca/csr.ts';
import type { RecordWrites } from '../ca/issue-writes.ts';
import { bytesEqual } from '../core/bytes.ts';
import { crashPoint } from '../core/crash-points.ts';
import { asKeywardError, KeywardError, problemDocument } from '../core/errors.ts';
import type { AcmeIdentifierJson } from '../db/acme-schema.ts';
import type { Decision, Gathered } from '../issuance/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { decodeB64url } from './ids.ts';
import { accountSpki, requireAccount, verifyRequest } from './jws.ts';
import { orderClaims, orderResponse, ownedOrder, resolveProfile } from './orders.ts';
import { owned } from './owned.ts';
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

/** The CSR checks and the issuance decision for a ready order; nothing is written. */
async function decideFinalize(
  deps: AcmeDeps,
  account: AccountRow,
  order: OrderRow,
  gathered: Gathered,
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
  // Every rule (name policy again, certificates per name, CAA freshness) on what the nonce's spend read.
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
    gathered,
  });
}

/**
 * Finalize's part of the statement that records certificates (IssueRequest.recordWith): each
 * claimed order turns valid with its certificate, which is recorded only if its order did.
 */
export const orderTurnsValid: RecordWrites<{ orderId: string; now: Date }, [string[], string[], string[]]> = {
  name: 'order_valid',
  parameters: (items) => [
    items.map((i) => i.serial),
    items.map((i) => i.item.orderId),
    items.map((i) => i.item.now.toISOString()),
  ],
  body: (_linked, serial, orderId, now) => sql`
    UPDATE acme_orders o SET status = 'valid', certificate_serial = r.serial, updated_at = r.now
    FROM unnest(${serial}::text[], ${orderId}::text[], ${now}::timestamptz[]) AS r (serial, order_id, now)
    WHERE o.id = r.order_id AND o.status = 'processing'
    RETURNING o.*, r.serial AS linked_serial`,
};

const notReady = (order: OrderRow, now: Date) =>
  new KeywardError('orderNotReady', `Order is ${orderStatus(order, now)}, not ready`);

/**
 * Finalize: the order and what the decision needs come with the nonce's spend; the CSR checks and
 * the decision write nothing (a refused request leaves the order ready, so the client can fix it).
 * The order turns processing in the statement that reserves the serial (orderClaims): of
 * concurrent finalizes exactly one gets that far, the others hear the order is not ready.
 */
export async function finalize(c: Context, deps: AcmeDeps): Promise<Response> {
  const orderId = c.req.param('id')!;
  const req = await verifyRequest(c, deps, 'kid', { orderId, gathered: true });
  const account = requireAccount(req);
  const order = owned(req.order, account, 'order');
  const now = deps.clock.now();
  if (orderStatus(order, now) !== 'ready' || !req.gathered) throw notReady(order, now);
  const decision = await decideFinalize(deps, account, order, req.gathered, req.payload, now);

  crashPoint('finalize-decided', `acme:${account.id}`);
  let claimed = false;
  let done: OrderRow | undefined;
  try {
    const issued = await deps.issuance.sign(decision, {
      reserveWith: {
        claims: orderClaims,
        item: { orderId, accountId: account.id, now },
        lost: async () => notReady(await ownedOrder(deps.db, account, orderId), deps.clock.now()),
        claimed: () => (claimed = true),
      },
      // The certificate, its reservation and the order turning valid: one statement.
      recordWith: { writer: orderTurnsValid, item: { orderId, now } },
    });
    done = issued.linked?.[0] as OrderRow | undefined;
    if (done)
      deps.recentCertificates.set(issued.serial, {
        account_id: done.account_id,
        der: issued.der,
        issuer_id: issued.issuerId,
      });
  } catch (err) {
    // Before the claim nothing was written: the order is as it was (or another finalize's).
    if (!claimed) throw err;
    const prob = asKeywardError(err);
    if (prob.status >= 500)
      deps.log.error(
        { err: err instanceof Error ? err.stack : String(err), order: orderId },
        'issuing for an ACME order failed',
      );
    await deps.db
      .updateTable('acme_orders')
      .set({ status: 'invalid', error: JSON.stringify(problemDocument(prob)), updated_at: deps.clock.now() })
      .where('id', '=', orderId)
      .where('status', '=', 'processing')
      .execute();
    throw prob;
  }
  if (!done) throw new Error(`order ${orderId} was not recorded as valid with its certificate`);
  return orderResponse(deps, done, 200, { Location: deps.urls.order(orderId) });
}
