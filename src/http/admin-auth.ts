import type { TLSSocket } from 'node:tls';

import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';

import { ADMIN_PROFILE } from '../config/load.ts';
import type { Db } from '../db/schema.ts';

export type AdminAuth = { principal: string } | { status: 401 | 403; detail: string };

/**
 * Who holds the admin certificate presented on this HTTPS connection. The TLS layer has checked
 * the chain to this CA's roots (requestCert, not required); here the certificate must also be one
 * this CA issued with the `admin` profile, still valid and not revoked. The principal is
 * `admin:<URI SAN, else email, else DNS SAN, else CN>`, which the audit log records.
 */
export async function adminPrincipal(c: Context, db: Db): Promise<AdminAuth> {
  const socket = (c.env as HttpBindings | undefined)?.incoming?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== 'function')
    return { status: 401, detail: 'the admin endpoint needs HTTPS with an admin certificate' };
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return { status: 401, detail: 'an admin certificate is required' };
  if (!socket.authorized)
    return { status: 401, detail: `the client certificate is not from this CA (${String(socket.authorizationError)})` };
  const serial = cert.serialNumber.toLowerCase().replace(/^0+/, '');
  const row = await db
    .selectFrom('certificates')
    .select(['profile', 'status', 'not_after'])
    .where('serial', '=', serial)
    .executeTakeFirst();
  if (!row || row.profile !== ADMIN_PROFILE)
    return { status: 403, detail: 'this certificate is not an admin certificate (profile admin)' };
  if (row.status !== 'valid') return { status: 403, detail: 'the admin certificate is revoked' };
  if (new Date(row.not_after) <= new Date()) return { status: 403, detail: 'the admin certificate has expired' };
  const names = (cert.subjectaltname ?? '').split(/,\s*/);
  const pick = (prefix: string) => names.find((n) => n.startsWith(prefix))?.slice(prefix.length);
  const who = pick('URI:') ?? pick('email:') ?? pick('DNS:') ?? cert.subject?.CN;
  if (!who) return { status: 403, detail: 'the admin certificate names no one (no SAN, no CN)' };
  return { principal: `admin:${Array.isArray(who) ? who[0] : who}` };
}
