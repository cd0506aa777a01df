import { type Context, Hono } from 'hono';
import { html } from 'hono/html';
import type { JSX } from 'hono/jsx/jsx-runtime';

import { createEab, deactivateAccount, listAccounts, listEabKeys, revokeEabKey } from '../acme/operator.ts';
import { allowedReasonNames, reasonCode, reasonName } from '../ca/revocation-reasons.ts';
import { x509 } from '../ca/x509.ts';
import type { AppContext } from '../context.ts';
import { asKeywardError, KeywardError } from '../core/errors.ts';
import type { Feature } from '../core/feature.ts';
import { normalizeSerial } from '../core/serial.ts';
import { listAudit } from '../kms/audit-query.ts';
import { verifyAuditWithCheckpoints } from '../kms/checkpoints.ts';
import { listKeys } from '../kms/inventory.ts';
import { adminPrincipal } from './admin-auth.ts';
import {
  auditHead,
  CERTIFICATE_STATES,
  type CertificateState,
  issuedPerDay,
  searchCertificates,
  validationFailures,
} from './admin-web-data.ts';
import {
  AcmePage,
  ADMIN_CSS,
  AuditPage,
  CertificateDetail,
  CertificatesPage,
  Confirm,
  KeysPage,
  Layout,
  Overview,
  Refused,
} from './admin-web-pages.tsx';

/** Forms are a few fields; anything larger is not from these pages. */
const MAX_FORM_BYTES = 16 * 1024;
const AUDIT_PAGE = 50;

const SECURITY_HEADERS: Record<string, string> = {
  // No script at all, and nobody may frame the page (clickjacking a revoke button).
  'content-security-policy':
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // Not no-referrer: with it chromium sends "Origin: null" on form posts, which sameOrigin refuses.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
};

function render(c: Context, page: JSX.Element, status: 200 | 400 | 401 | 403 | 404 | 409 | 500 | 503 = 200) {
  return c.html(html`<!doctype html>${page}`, status, SECURITY_HEADERS);
}

/**
 * CSRF: the admin certificate goes with every request the browser makes to this origin, whoever's
 * page caused it, so a state change must come from one of these pages. Browsers send Origin on
 * every POST (and Sec-Fetch-Site); both must say this origin.
 */
function sameOrigin(c: Context): boolean {
  const site = c.req.header('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin') return false;
  const origin = c.req.header('origin');
  return origin !== undefined && origin === new URL(c.req.url).origin;
}

async function form(c: Context): Promise<Record<string, string>> {
  const length = Number(c.req.header('content-length') ?? 0);
  if (length > MAX_FORM_BYTES) throw new KeywardError('payloadTooLarge', 'the form is too large');
  const body = await c.req.parseBody();
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === 'string') out[k] = v;
  return out;
}

type Handler = (c: Context, principal: string) => Promise<Response>;

/**
 * The admin web page on the HTTPS listener at /admin: only for a client certificate this CA issued
 * with the admin profile (admin-auth.ts); anyone else gets a page that says so and nothing else.
 * Changes go through the same functions as the command line, so they are audited under the
 * certificate's principal (`admin:<email>`).
 */
export function adminWebFeature(ctx: AppContext): Feature {
  const db = ctx.database.db;
  const web = new Hono();

  web.onError((err, c) => {
    const e = asKeywardError(err);
    const status = ([400, 401, 403, 404, 409, 503] as const).find((s) => s === e.status) ?? 500;
    return render(
      c,
      <Layout title="That did not work">
        <p class="note danger">{e.message}</p>
        <p>
          <a href="/admin">Back to the overview</a>
        </p>
      </Layout>,
      status,
    );
  });

  const guard =
    (handler: Handler, change = false) =>
    async (c: Context): Promise<Response> => {
      const auth = await adminPrincipal(c, db);
      if ('status' in auth) return render(c, <Refused detail={auth.detail} />, auth.status);
      if (change && !sameOrigin(c))
        return render(c, <Refused detail="this change did not come from the admin page itself" />, 403);
      return handler(c, auth.principal);
    };
  const get = (path: string, handler: Handler) => web.get(path, guard(handler));
  const post = (path: string, handler: Handler) => web.post(path, guard(handler, true));

  web.get('/admin.css', (c) =>
    c.body(ADMIN_CSS, 200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=3600' }),
  );

  get('/', async (c, principal) => {
    const [issuers, issued, failures, keys, audit] = await Promise.all([
      ctx.ca.issuers(),
      issuedPerDay(db),
      validationFailures(db),
      listKeys(db),
      auditHead(db),
    ]);
    return render(
      c,
      <Overview d={{ issuers, issued, failures, keys, sealed: ctx.kms.sealed, audit }} principal={principal} />,
    );
  });

  get('/certificates', async (c, principal) => {
    const q = c.req.query('q')?.slice(0, 200);
    const stateText = c.req.query('state') ?? 'any';
    const state = CERTIFICATE_STATES.find((s) => s === stateText);
    if (!state) throw new KeywardError('malformed', `state must be one of ${CERTIFICATE_STATES.join(', ')}`);
    const expiringText = c.req.query('expiring');
    const expiringDays = expiringText ? Number(expiringText) : undefined;
    if (expiringDays !== undefined && (!Number.isInteger(expiringDays) || expiringDays < 1 || expiringDays > 3650))
      throw new KeywardError('malformed', '"expiring within" must be a whole number of days from 1 to 3650');
    const query = { q, state: state as CertificateState, expiringDays, limit: 100 };
    return render(
      c,
      <CertificatesPage rows={await searchCertificates(db, query)} query={query} principal={principal} />,
    );
  });

  const detail = async (c: Context, principal: string, serial: string, notice?: string) => {
    const row = await ctx.ca.certificate(serial);
    const text = new x509.X509Certificate(new Uint8Array(row.der)).toString('text');
    return render(
      c,
      <CertificateDetail
        row={row}
        chainPem={await ctx.ca.chainFor(row)}
        text={text}
        reasons={allowedReasonNames()}
        reasonName={row.revocation_reason === null ? null : reasonName(row.revocation_reason)}
        notice={notice}
        principal={principal}
      />,
    );
  };

  get('/certificates/:serial', async (c, principal) => {
    const serial = normalizeSerial(c.req.param('serial')!);
    const notice = c.req.query('done') === 'revoked' ? 'Revoked. OCSP answers "revoked" from now on.' : undefined;
    return detail(c, principal, serial, notice);
  });

  post('/certificates/:serial/revoke', async (c, principal) => {
    const serial = normalizeSerial(c.req.param('serial')!);
    const f = await form(c);
    const reason = f.reason ?? 'unspecified';
    reasonCode(reason); // a clear error for an unknown reason, before anything else
    const row = await ctx.ca.certificate(serial);
    if (f.confirm !== 'yes') {
      const names = [...row.sans.dns, ...row.sans.ip, ...row.sans.uri, ...row.sans.email].join(', ');
      return render(
        c,
        <Confirm
          title="Revoke this certificate?"
          action={`/admin/certificates/${serial}/revoke`}
          fields={{ reason }}
          button={`Revoke ${serial}`}
          back={`/admin/certificates/${serial}`}
          principal={principal}
          section="certificates"
        >
          Revoke certificate <code>{serial}</code> ({names || row.common_name}, profile {row.profile}) with reason{' '}
          <strong>{reason}</strong>? This cannot be undone: OCSP answers "revoked" at once and the next CRL lists it.
        </Confirm>,
      );
    }
    await ctx.ca.revoke(serial, reasonCode(reason), principal);
    return c.redirect(`/admin/certificates/${serial}?done=revoked`, 303);
  });

  const acmePage = async (
    c: Context,
    principal: string,
    extra: { created?: { keyId: string; hmacKey: string; label: string | null }; notice?: string } = {},
  ) =>
    render(
      c,
      <AcmePage
        accounts={await listAccounts(db, { limit: 200 })}
        keys={await listEabKeys(db, { limit: 200 })}
        principal={principal}
        {...extra}
      />,
    );

  get('/acme', async (c, principal) => acmePage(c, principal, { notice: c.req.query('notice')?.slice(0, 200) }));

  post('/acme/eab', async (c, principal) => {
    const label = (await form(c)).label?.trim();
    if (!label || label.length > 200) throw new KeywardError('malformed', 'the label must be 1 to 200 characters');
    const key = await createEab(db, ctx.kms, label, principal);
    return acmePage(c, principal, { created: key });
  });

  post('/acme/eab/:id/revoke', async (c, principal) => {
    const id = c.req.param('id')!;
    if ((await form(c)).confirm !== 'yes')
      return render(
        c,
        <Confirm
          title="Revoke this EAB key?"
          action={`/admin/acme/eab/${id}/revoke`}
          fields={{}}
          button={`Revoke ${id}`}
          back="/admin/acme"
          principal={principal}
          section="acme"
        >
          Revoke EAB key <code>{id}</code>? It will bind no new account, and the account it bound (if any) is revoked:
          its ACME requests are refused.
        </Confirm>,
      );
    const r = await revokeEabKey(db, ctx.kms.audit, id, principal);
    const notice = `Revoked EAB key ${r.keyId}${r.accountRevoked ? ` and its account ${r.accountRevoked}` : ''}.`;
    return c.redirect(`/admin/acme?notice=${encodeURIComponent(notice)}`, 303);
  });

  post('/acme/accounts/:id/deactivate', async (c, principal) => {
    const id = c.req.param('id')!;
    if ((await form(c)).confirm !== 'yes')
      return render(
        c,
        <Confirm
          title="Deactivate this ACME account?"
          action={`/admin/acme/accounts/${id}/deactivate`}
          fields={{}}
          button={`Deactivate ${id}`}
          back="/admin/acme"
          principal={principal}
          section="acme"
        >
          Deactivate ACME account <code>{id}</code>? Its requests are refused from now on and its pending orders become
          invalid. Its certificates stay valid (revoke them separately).
        </Confirm>,
      );
    const r = await deactivateAccount(db, ctx.kms.audit, id, principal);
    const notice = r.changed ? `Deactivated account ${id}.` : `Account ${id} was already ${r.account.status}.`;
    return c.redirect(`/admin/acme?notice=${encodeURIComponent(notice)}`, 303);
  });

  get('/keys', async (c, principal) =>
    render(c, <KeysPage keys={await listKeys(db)} sealed={ctx.kms.sealed} principal={principal} />),
  );

  const beforeParam = (c: Context) => {
    const text = c.req.query('before');
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 1) throw new KeywardError('malformed', '"before" must be an event number');
    return n;
  };

  get('/audit', async (c, principal) =>
    render(
      c,
      <AuditPage
        events={await listAudit(db, { before: beforeParam(c), newestFirst: true, limit: AUDIT_PAGE })}
        size={AUDIT_PAGE}
        principal={principal}
      />,
    ),
  );

  // Reads only (a walk of the chain), so a link rather than a form.
  get('/audit/verify', async (c, principal) => {
    const verification = await verifyAuditWithCheckpoints(ctx.kms.audit, db);
    return render(
      c,
      <AuditPage
        events={await listAudit(db, { newestFirst: true, limit: AUDIT_PAGE })}
        size={AUDIT_PAGE}
        verification={verification}
        principal={principal}
      />,
    );
  });

  return { name: 'admin-web', https: (app) => void app.route('/admin', web) };
}
