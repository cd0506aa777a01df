import type { Context } from 'hono';
import { calculateJwkThumbprint, type JWK } from 'jose';

import { KeywardError } from '../core/errors.ts';
import { accountByThumbprint, type AccountRow } from './account-store.ts';
import { checkContacts } from './contacts.ts';
import type { AcmeDeps } from './deps.ts';
import { eabRequired, verifyEab } from './eab.ts';
import { randomId } from './ids.ts';
import {
  checkAlgorithm,
  decodeProtected,
  parseFlattened,
  publicJwk,
  requireAccount,
  verifyRequest,
  verifySignature,
} from './jws.ts';
import { endAccount } from './operator.ts';
import { jsonResponse, link } from './respond.ts';
import { accountView, orderStatus } from './views.ts';

class LostRace extends Error {}

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '23505';
}

function existingAccountResponse(deps: AcmeDeps, a: AccountRow): Response {
  if (a.status !== 'valid') throw new KeywardError('unauthorized', `The account for this key is ${a.status}`);
  return jsonResponse(accountView(deps.urls, a), 200, { Location: deps.urls.account(a.id) });
}

/** RFC 8555 §7.3: 201 for a new account, 200 with the same Location for a key already known. */
export async function newAccount(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'jwk');
  const p = req.payload;
  if (!p) throw new KeywardError('malformed', 'newAccount needs a JSON object payload');
  // An existing key needs neither EAB nor ToS: cert-manager and x/crypto look accounts up this way.
  const existing = await accountByThumbprint(deps.db, req.thumbprint);
  if (existing) return existingAccountResponse(deps, existing);
  if (p.onlyReturnExisting === true) throw new KeywardError('accountDoesNotExist', 'No account exists for this key');

  const acme = deps.config.acme;
  if (acme.termsOfService && p.termsOfServiceAgreed !== true) {
    throw new KeywardError('userActionRequired', `You must agree to the terms of service at ${acme.termsOfService}`, {
      headers: { Link: link(acme.termsOfService, 'terms-of-service') },
    });
  }
  const contact = p.contact === undefined ? [] : checkContacts(p.contact);
  let eabKeyId: string | undefined;
  if (p.externalAccountBinding !== undefined) {
    eabKeyId = await verifyEab(deps.secrets, deps.db, p.externalAccountBinding, req.header.url, req.thumbprint);
  } else if (acme.externalAccountRequired) {
    throw eabRequired();
  }

  const id = randomId();
  const now = deps.clock.now();
  let created: AccountRow;
  try {
    created = await deps.db.transaction().execute(async (trx) => {
      if (eabKeyId !== undefined) {
        const spent = await trx
          .updateTable('acme_eab_keys')
          .set({ account_id: id, used_at: now })
          .where('key_id', '=', eabKeyId)
          .where('account_id', 'is', null)
          .returning('key_id')
          .executeTakeFirst();
        if (!spent) throw new KeywardError('unauthorized', 'This external account binding key has already been used');
      }
      const row = await trx
        .insertInto('acme_accounts')
        .values({
          id,
          key_thumbprint: req.thumbprint,
          jwk: JSON.stringify(req.jwk),
          status: 'valid',
          contact: JSON.stringify(contact),
          tos_agreed: p.termsOfServiceAgreed === true,
          eab_key_id: eabKeyId ?? null,
          eab_binding: eabKeyId !== undefined ? JSON.stringify(p.externalAccountBinding) : null,
          created_at: now,
          updated_at: now,
        })
        .onConflict((oc) => oc.column('key_thumbprint').doNothing())
        .returningAll()
        .executeTakeFirst();
      if (!row) throw new LostRace();
      return row;
    });
  } catch (err) {
    if (!(err instanceof LostRace)) throw err;
    const winner = await accountByThumbprint(deps.db, req.thumbprint);
    if (!winner) throw err;
    return existingAccountResponse(deps, winner);
  }
  return jsonResponse(accountView(deps.urls, created), 201, { Location: deps.urls.account(created.id) });
}

function ownAccount(req: { account: AccountRow | undefined }, id: string): AccountRow {
  const account = requireAccount(req);
  if (account.id !== id) throw new KeywardError('unauthorized', 'The JWS kid does not own this account');
  return account;
}

/** RFC 8555 §7.3.2/7.3.6: fetch, contact update, deactivation; other fields are ignored. */
export async function updateAccount(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  let account = ownAccount(req, c.req.param('id')!);
  const p = req.payload;
  if (p) {
    const now = deps.clock.now();
    if (p.status !== undefined && p.status !== 'valid' && p.status !== 'deactivated')
      throw new KeywardError('malformed', 'Account status may only be set to "deactivated"');
    if (p.contact !== undefined) {
      const contact = checkContacts(p.contact);
      account = await deps.db
        .updateTable('acme_accounts')
        .set({ contact: JSON.stringify(contact), updated_at: now })
        .where('id', '=', account.id)
        .returningAll()
        .executeTakeFirstOrThrow();
    }
    if (p.status === 'deactivated') {
      account = await deps.db.transaction().execute(async (trx) => {
        const row = await endAccount(trx, account.id, 'deactivated', now);
        if (!row) throw new KeywardError('unauthorized', 'Account is not valid');
        return row;
      });
    }
  }
  return jsonResponse(accountView(deps.urls, account), 200, { Location: deps.urls.account(account.id) });
}

/** RFC 8555 §7.3.5: the inner JWS, signed by the new key, proves possession and names the old key. */
export async function keyChange(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  if (!req.payload) throw new KeywardError('malformed', 'keyChange needs the inner JWS as payload');
  const inner = parseFlattened(req.payload);
  const h = decodeProtected(inner);
  const alg = checkAlgorithm(h.alg);
  if ('nonce' in h) throw new KeywardError('malformed', 'The inner keyChange JWS must not contain a nonce');
  if ('kid' in h || h.jwk === undefined)
    throw new KeywardError('malformed', 'The inner keyChange JWS must contain "jwk" and no "kid"');
  if (h.url !== req.header.url)
    throw new KeywardError('malformed', 'The inner keyChange JWS "url" must equal the outer one');
  const newJwk = publicJwk(h.jwk);
  const body = await verifySignature(inner, alg, newJwk);
  if (!body) throw new KeywardError('malformed', 'The inner keyChange JWS needs a payload');
  if (body.account !== deps.urls.account(account.id))
    throw new KeywardError('malformed', 'keyChange "account" must be the URL of the signing account');
  let oldThumb: string;
  try {
    oldThumb = await calculateJwkThumbprint(publicJwk(body.oldKey), 'sha256');
  } catch {
    throw new KeywardError('malformed', 'keyChange "oldKey" is not a JWK');
  }
  if (oldThumb !== account.key_thumbprint)
    throw new KeywardError('unauthorized', 'keyChange "oldKey" is not the current account key');
  const newThumb = await calculateJwkThumbprint(newJwk, 'sha256');
  if (newThumb === account.key_thumbprint)
    throw new KeywardError('malformed', 'The new key is the same as the current key');
  const conflict = async (): Promise<never> => {
    const other = await accountByThumbprint(deps.db, newThumb);
    throw new KeywardError('conflict', 'The new key is already in use by another account', {
      ...(other ? { headers: { Location: deps.urls.account(other.id) } } : {}),
    });
  };
  if (await accountByThumbprint(deps.db, newThumb)) await conflict();
  let updated: AccountRow | undefined;
  try {
    updated = await deps.db
      .updateTable('acme_accounts')
      .set({ jwk: JSON.stringify(newJwk satisfies JWK), key_thumbprint: newThumb, updated_at: deps.clock.now() })
      .where('id', '=', account.id)
      .where('key_thumbprint', '=', account.key_thumbprint)
      .where('status', '=', 'valid')
      .returningAll()
      .executeTakeFirst();
  } catch (err) {
    if (isUniqueViolation(err)) await conflict();
    throw err;
  }
  if (!updated) throw new KeywardError('unauthorized', 'The account key changed concurrently; retry');
  return jsonResponse(accountView(deps.urls, updated), 200, { Location: deps.urls.account(updated.id) });
}

const ORDERS_PAGE = 100;

/** RFC 8555 §7.1.2.1: the account's orders that are not invalid, paged with Link rel="next". */
export async function listOrders(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = ownAccount(req, c.req.param('id')!);
  if (req.payload) throw new KeywardError('malformed', 'The orders list is fetched with POST-as-GET');
  const cursor = Number(c.req.query('cursor') ?? '0');
  if (!Number.isSafeInteger(cursor) || cursor < 0) throw new KeywardError('malformed', 'Bad cursor');
  const now = deps.clock.now();
  const rows = await deps.db
    .selectFrom('acme_orders')
    .selectAll()
    .where('account_id', '=', account.id)
    .where('status', '!=', 'invalid')
    .orderBy('created_at')
    .orderBy('id')
    .offset(cursor)
    .limit(ORDERS_PAGE + 1)
    .execute();
  const page = rows.slice(0, ORDERS_PAGE).filter((o) => orderStatus(o, now) !== 'invalid');
  const headers: Record<string, string> = {};
  if (rows.length > ORDERS_PAGE)
    headers.Link = link(`${deps.urls.accountOrders(account.id)}?cursor=${cursor + ORDERS_PAGE}`, 'next');
  return jsonResponse({ orders: page.map((o) => deps.urls.order(o.id)) }, 200, headers);
}
