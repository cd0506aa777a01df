import type { Child, FC, PropsWithChildren } from 'hono/jsx';

import type { AccountSummary, EabKeySummary } from '../acme/operator.ts';
import type { CertificateRow, IssuerRow } from '../db/schema.ts';
import type { AuditListItem } from '../kms/audit-query.ts';
import type { FullVerification } from '../kms/checkpoints.ts';
import type { KeySummary } from '../kms/inventory.ts';
import type { AuditHead, CertificateQuery, IssuedDay, ValidationFailure } from './admin-web-data.ts';
import { CERTIFICATE_STATES } from './admin-web-data.ts';

// The admin web page's views: plain server-rendered HTML (hono/jsx escapes every value), no
// script, one small stylesheet. Forms post back to the same origin (admin-web.tsx checks it).

export const ADMIN_CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.4rem;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header a.here{text-decoration:underline}
header .who{margin-left:auto;opacity:.85}
main{padding:1rem 1.2rem;max-width:1200px}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:.8rem}
th,td{border:1px solid #d8dde3;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#fff;border:1px solid #d8dde3;padding:.6rem;overflow:auto}
.ok{color:#1b7a3a}.bad{color:#b3261e;font-weight:600}.warn{color:#9a6100}
.note{background:#fff;border-left:4px solid #1d3557;padding:.5rem .8rem;margin:.6rem 0}
.danger{border-left-color:#b3261e}
form.inline{display:inline}
input,select,button{font:inherit;padding:.2rem .4rem}
button.danger{background:#b3261e;color:#fff;border:1px solid #8c1d17}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #d8dde3;padding:.6rem 1rem;min-width:12rem}
.card b{display:block;font-size:1.5rem}
meter{width:12rem}
`;

export type Section = 'overview' | 'certificates' | 'acme' | 'keys' | 'audit';

const NAV: [Section, string, string][] = [
  ['overview', 'Overview', '/admin'],
  ['certificates', 'Certificates', '/admin/certificates'],
  ['acme', 'ACME accounts & EAB', '/admin/acme'],
  ['keys', 'Keys', '/admin/keys'],
  ['audit', 'Audit log', '/admin/audit'],
];

export const Layout: FC<PropsWithChildren<{ title: string; section?: Section; principal?: string }>> = (p) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{p.title} · Keyward admin</title>
      <link rel="stylesheet" href="/admin/admin.css" />
    </head>
    <body>
      <header>
        <strong>Keyward admin</strong>
        {p.principal
          ? NAV.map(([id, label, href]) => (
              <a href={href} class={id === p.section ? 'here' : undefined}>
                {label}
              </a>
            ))
          : null}
        {p.principal ? <span class="who">signed in as {p.principal}</span> : null}
      </header>
      <main>
        <h1>{p.title}</h1>
        {p.children}
      </main>
    </body>
  </html>
);

/** What someone without an admin certificate sees: no data, and how to get in. */
export const Refused: FC<{ detail: string }> = ({ detail }) => (
  <Layout title="Administrators only">
    <p class="note danger">
      <strong>No access.</strong> {detail}.
    </p>
    <p>
      This page is for operators of this certificate authority. It admits only a client certificate issued by this CA
      with the <code>admin</code> profile, made with <code>keyward admin-cert create --email ADDRESS</code> and
      presented by your browser.
    </p>
  </Layout>
);

const date = (iso: string | Date | null | undefined) => (iso ? new Date(iso).toISOString().slice(0, 16) + 'Z' : '—');
const day = (iso: string | Date | null | undefined) => (iso ? new Date(iso).toISOString().slice(0, 10) : '—');
const daysLeft = (iso: Date | string) => Math.floor((new Date(iso).getTime() - Date.now()) / 86_400_000);

function names(row: Pick<CertificateRow, 'sans' | 'common_name'>): string {
  const all = [...row.sans.dns, ...row.sans.ip, ...row.sans.uri, ...row.sans.email];
  return (all.length ? all : [row.common_name ?? '']).join(', ');
}

export function certificateState(row: Pick<CertificateRow, 'status' | 'not_after'>): string {
  if (row.status === 'revoked') return 'revoked';
  return new Date(row.not_after) <= new Date() ? 'expired' : 'valid';
}

const StateCell: FC<{ state: string }> = ({ state }) => (
  <span class={state === 'valid' ? 'ok' : state === 'revoked' ? 'bad' : 'warn'}>{state}</span>
);

export interface OverviewData {
  issuers: IssuerRow[];
  issued: IssuedDay[];
  failures: { last24h: number; recent: ValidationFailure[] };
  keys: KeySummary[];
  sealed: boolean;
  audit: AuditHead;
}

export const Overview: FC<{ d: OverviewData; principal: string }> = ({ d, principal }) => {
  const max = Math.max(1, ...d.issued.map((x) => x.count));
  const pending = d.keys.filter((k) => k.deletionAt && !k.destroyedAt).length;
  const disabled = d.keys.filter((k) => k.state === 'Disabled').length;
  const keks = d.keys.filter((k) => k.kind === 'kek');
  return (
    <Layout title="Overview" section="overview" principal={principal}>
      <div class="cards">
        <div class="card">
          <b>{d.issued.at(-1)?.count ?? 0}</b>certificates issued today
        </div>
        <div class="card">
          <b class={d.failures.last24h ? 'warn' : undefined}>{d.failures.last24h}</b>validation failures (24 h)
        </div>
        <div class="card">
          <b class={d.sealed || disabled ? 'bad' : 'ok'}>{d.sealed ? 'sealed' : 'unsealed'}</b>
          key hierarchy: {d.keys.length} keys, {disabled} disabled, {pending} pending deletion
        </div>
        <div class="card">
          <b>#{d.audit.seq}</b>audit chain head; last checkpoint{' '}
          {d.audit.lastCheckpoint ? `#${d.audit.lastCheckpoint.seq} at ${date(d.audit.lastCheckpoint.ts)}` : 'none yet'}
          <br />
          <a href="/admin/audit/verify">verify now</a>
        </div>
      </div>

      <h2>Issuers</h2>
      <table>
        <tr>
          <th>Kind</th>
          <th>Subject</th>
          <th>Issuer id</th>
          <th>Valid until</th>
          <th>Days left</th>
        </tr>
        {d.issuers.map((i) => {
          const left = daysLeft(i.not_after);
          return (
            <tr>
              <td>
                {i.kind}
                {i.kind === 'intermediate' && !i.active ? ' (inactive)' : ''}
              </td>
              <td>{i.subject}</td>
              <td>
                <code>{i.id}</code>
              </td>
              <td>{date(i.not_after)}</td>
              <td class={left < 30 ? 'bad' : left < 90 ? 'warn' : 'ok'}>{left}</td>
            </tr>
          );
        })}
      </table>

      <h2>Certificates issued per day (UTC)</h2>
      <table>
        <tr>
          <th>Day</th>
          <th>Issued</th>
          <th></th>
        </tr>
        {d.issued.map((x) => (
          <tr>
            <td>{x.day}</td>
            <td>{x.count}</td>
            <td>
              <meter min={0} max={max} value={x.count} />
            </td>
          </tr>
        ))}
      </table>

      <h2>Recent validation failures</h2>
      {d.failures.recent.length ? (
        <table>
          <tr>
            <th>Asked</th>
            <th>Identifier</th>
            <th>Challenge</th>
            <th>Problem</th>
          </tr>
          {d.failures.recent.map((f) => (
            <tr>
              <td>{date(f.at)}</td>
              <td>{f.identifier}</td>
              <td>{f.type}</td>
              <td>
                <code>{f.problem}</code> {f.detail}
              </td>
            </tr>
          ))}
        </table>
      ) : (
        <p>None in the last 24 hours.</p>
      )}

      <h2>Key encryption keys</h2>
      <table>
        <tr>
          <th>KEK</th>
          <th>State</th>
          <th>Primary version</th>
          <th>Rotated</th>
        </tr>
        {keks.map((k) => (
          <tr>
            <td>{k.name}</td>
            <td>{k.state}</td>
            <td>v{k.versions?.find((v) => v.primary)?.version ?? '?'}</td>
            <td>{date(k.rotated ?? k.created)}</td>
          </tr>
        ))}
      </table>
    </Layout>
  );
};

export const CertificatesPage: FC<{ rows: CertificateRow[]; query: CertificateQuery; principal: string }> = ({
  rows,
  query,
  principal,
}) => (
  <Layout title="Certificates" section="certificates" principal={principal}>
    <form method="get" action="/admin/certificates">
      <input
        type="search"
        name="q"
        value={query.q ?? ''}
        placeholder="name, serial or requester"
        size={32}
        aria-label="search"
      />{' '}
      <select name="state" aria-label="state">
        {CERTIFICATE_STATES.map((s) => (
          <option value={s} selected={(query.state ?? 'any') === s}>
            {s === 'any' ? 'any state' : s}
          </option>
        ))}
      </select>{' '}
      <label>
        expiring within{' '}
        <input type="number" name="expiring" min={1} max={3650} value={query.expiringDays ?? ''} size={4} /> days
      </label>{' '}
      <button type="submit">Search</button>
    </form>
    <p>
      {rows.length} certificate{rows.length === 1 ? '' : 's'}
      {rows.length >= (query.limit ?? 100) ? ` (the newest ${rows.length}; narrow the search)` : ''}.
    </p>
    <table>
      <tr>
        <th>Serial</th>
        <th>Names</th>
        <th>Profile</th>
        <th>State</th>
        <th>Expires</th>
        <th>Requester</th>
      </tr>
      {rows.map((r) => (
        <tr>
          <td>
            <a href={`/admin/certificates/${r.serial}`}>
              <code>{r.serial}</code>
            </a>
          </td>
          <td>{names(r)}</td>
          <td>{r.profile}</td>
          <td>
            <StateCell state={certificateState(r)} />
          </td>
          <td>{date(r.not_after)}</td>
          <td>{r.requester}</td>
        </tr>
      ))}
    </table>
  </Layout>
);

export const CertificateDetail: FC<{
  row: CertificateRow;
  chainPem: string;
  text: string;
  reasons: string[];
  reasonName: string | null;
  notice?: string;
  principal: string;
}> = ({ row, chainPem, text, reasons, reasonName, notice, principal }) => {
  const state = certificateState(row);
  return (
    <Layout title={`Certificate ${row.serial}`} section="certificates" principal={principal}>
      {notice ? <p class="note">{notice}</p> : null}
      <table>
        <tr>
          <th>State</th>
          <td>
            <StateCell state={state} />
            {row.status === 'revoked'
              ? ` at ${date(row.revoked_at)}, reason ${reasonName ?? row.revocation_reason}`
              : ''}
          </td>
        </tr>
        <tr>
          <th>Names</th>
          <td>{names(row)}</td>
        </tr>
        <tr>
          <th>Common name</th>
          <td>{row.common_name ?? '—'}</td>
        </tr>
        <tr>
          <th>Profile</th>
          <td>{row.profile}</td>
        </tr>
        <tr>
          <th>Validity</th>
          <td>
            {date(row.not_before)} to {date(row.not_after)}
          </td>
        </tr>
        <tr>
          <th>Issuer</th>
          <td>
            <code>{row.issuer_id}</code>
          </td>
        </tr>
        <tr>
          <th>Requester</th>
          <td>{row.requester}</td>
        </tr>
        <tr>
          <th>Issued</th>
          <td>{date(row.created_at)}</td>
        </tr>
      </table>
      {row.status === 'valid' ? (
        <form method="post" action={`/admin/certificates/${row.serial}/revoke`} class="note danger">
          <label>
            Revoke with reason{' '}
            <select name="reason">
              {reasons.map((r) => (
                <option value={r}>{r}</option>
              ))}
            </select>
          </label>{' '}
          <button type="submit" class="danger">
            Revoke…
          </button>{' '}
          (you confirm on the next page)
        </form>
      ) : null}
      <h2>Chain (leaf first)</h2>
      <pre>{chainPem}</pre>
      <h2>Decoded</h2>
      <pre>{text}</pre>
    </Layout>
  );
};

/** A second step for what can't be undone: the action, restated, with a button that does it. */
export const Confirm: FC<{
  title: string;
  action: string;
  fields: Record<string, string>;
  button: string;
  back: string;
  principal: string;
  section: Section;
  children?: Child;
}> = (p) => (
  <Layout title={p.title} section={p.section} principal={p.principal}>
    <div class="note danger">{p.children}</div>
    <form method="post" action={p.action}>
      {Object.entries(p.fields).map(([k, v]) => (
        <input type="hidden" name={k} value={v} />
      ))}
      <input type="hidden" name="confirm" value="yes" />
      <button type="submit" class="danger">
        {p.button}
      </button>{' '}
      <a href={p.back}>Cancel</a>
    </form>
  </Layout>
);

export const AcmePage: FC<{
  accounts: AccountSummary[];
  keys: EabKeySummary[];
  created?: { keyId: string; hmacKey: string; label: string | null };
  notice?: string;
  principal: string;
}> = ({ accounts, keys, created, notice, principal }) => (
  <Layout title="ACME accounts and EAB keys" section="acme" principal={principal}>
    {notice ? <p class="note">{notice}</p> : null}
    {created ? (
      <div class="note" id="new-eab">
        <p>
          <strong>New EAB key{created.label ? ` "${created.label}"` : ''}.</strong> Give both values to the ACME client;
          the HMAC key is shown only now.
        </p>
        <p>
          Key ID: <code id="eab-kid">{created.keyId}</code>
          <br />
          HMAC key: <code id="eab-hmac">{created.hmacKey}</code>
        </p>
      </div>
    ) : null}
    <h2>External Account Binding keys</h2>
    <form method="post" action="/admin/acme/eab">
      <label>
        Label <input type="text" name="label" maxlength={200} required />
      </label>{' '}
      <button type="submit">Create EAB key</button>
    </form>
    <table>
      <tr>
        <th>Key ID</th>
        <th>Label</th>
        <th>State</th>
        <th>Created</th>
        <th>Account</th>
        <th></th>
      </tr>
      {keys.map((k) => (
        <tr>
          <td>
            <code>{k.keyId}</code>
          </td>
          <td>{k.label ?? ''}</td>
          <td>{k.state}</td>
          <td>{date(k.createdAt)}</td>
          <td>{k.accountId ? <code>{k.accountId}</code> : '—'}</td>
          <td>
            {k.state === 'revoked' ? (
              date(k.revokedAt)
            ) : (
              <form method="post" action={`/admin/acme/eab/${k.keyId}/revoke`} class="inline">
                <button type="submit">Revoke…</button>
              </form>
            )}
          </td>
        </tr>
      ))}
    </table>
    <h2>Accounts</h2>
    <table>
      <tr>
        <th>Account</th>
        <th>Status</th>
        <th>Contact</th>
        <th>EAB key</th>
        <th>Created</th>
        <th></th>
      </tr>
      {accounts.map((a) => (
        <tr>
          <td>
            <code>{a.id}</code>
          </td>
          <td>{a.status}</td>
          <td>{a.contact.join(', ')}</td>
          <td>{a.eabKeyId ? <code>{a.eabKeyId}</code> : '—'}</td>
          <td>{date(a.createdAt)}</td>
          <td>
            {a.status === 'valid' ? (
              <form method="post" action={`/admin/acme/accounts/${a.id}/deactivate`} class="inline">
                <button type="submit">Deactivate…</button>
              </form>
            ) : null}
          </td>
        </tr>
      ))}
    </table>
  </Layout>
);

export const KeysPage: FC<{ keys: KeySummary[]; sealed: boolean; principal: string }> = ({
  keys,
  sealed,
  principal,
}) => {
  const pending = [
    ...keys
      .filter((k) => k.deletionAt && !k.destroyedAt)
      .map((k) => ({ what: `${k.kind} ${k.name}`, id: k.id, at: k.deletionAt! })),
    ...keys.flatMap((k) =>
      (k.versions ?? [])
        .filter((v) => v.deletionAt && !v.destroyedAt)
        .map((v) => ({ what: `${k.name} version ${v.version}`, id: k.id, at: v.deletionAt! })),
    ),
  ];
  return (
    <Layout title="Keys" section="keys" principal={principal}>
      <p class={sealed ? 'note danger' : 'note'}>
        The root of trust is {sealed ? 'sealed: nothing can be signed until keyward unseal' : 'open'}.
      </p>
      <h2>Pending deletions</h2>
      {pending.length ? (
        <table>
          <tr>
            <th>Key</th>
            <th>Id</th>
            <th>Destroyed on</th>
          </tr>
          {pending.map((p) => (
            <tr>
              <td>{p.what}</td>
              <td>
                <code>{p.id}</code>
              </td>
              <td class="bad">{day(p.at)}</td>
            </tr>
          ))}
        </table>
      ) : (
        <p>None. (keyward kms schedule-deletion; cancellable until the day it takes effect.)</p>
      )}
      <h2>All keys</h2>
      <table>
        <tr>
          <th>Kind</th>
          <th>Name</th>
          <th>State</th>
          <th>Algorithm</th>
          <th>Created</th>
          <th>Uses</th>
          <th>Versions (KEKs)</th>
        </tr>
        {keys.map((k) => (
          <tr>
            <td>{k.kind}</td>
            <td>
              {k.name}
              <br />
              <code>{k.id}</code>
            </td>
            <td>
              {k.state}
              {k.deletionAt && !k.destroyedAt ? ` (destroyed on ${day(k.deletionAt)})` : ''}
            </td>
            <td>
              {k.algorithm}
              {k.protection ? ` (${k.protection})` : ''}
            </td>
            <td>{date(k.created)}</td>
            <td>{k.uses}</td>
            <td>
              {(k.versions ?? []).map((v) => (
                <div>
                  v{v.version} {v.state}
                  {v.primary ? ' (primary)' : ''}, {v.wrappedDeks} DEK(s)
                  {v.deletionAt && !v.destroyedAt ? `, destroyed on ${day(v.deletionAt)}` : ''}
                </div>
              ))}
            </td>
          </tr>
        ))}
      </table>
    </Layout>
  );
};

export const AuditPage: FC<{
  events: AuditListItem[];
  size: number;
  verification?: FullVerification;
  principal: string;
}> = ({ events, size, verification, principal }) => {
  const oldest = events.at(-1)?.seq;
  return (
    <Layout title="Audit log" section="audit" principal={principal}>
      {verification ? (
        <p class={verification.ok ? 'note' : 'note danger'} id="verification">
          {verification.ok
            ? `The audit log is intact: ${verification.events} events, ${verification.checkpoints} signed checkpoint(s).`
            : `The audit log is broken at event ${verification.firstBad?.seq}: ${verification.firstBad?.detail} (${verification.firstBad?.problem}).`}
        </p>
      ) : (
        <p>
          <a href="/admin/audit/verify">Verify the hash chain and signed checkpoints</a>
        </p>
      )}
      <table>
        <tr>
          <th>#</th>
          <th>Time</th>
          <th>Principal</th>
          <th>Action</th>
          <th>Outcome</th>
          <th>Details</th>
        </tr>
        {events.map((e) => (
          <tr>
            <td>{e.seq}</td>
            <td>{date(e.ts)}</td>
            <td>{e.principal}</td>
            <td>{e.action}</td>
            <td class={e.outcome === 'success' ? 'ok' : 'bad'}>
              {e.outcome}
              {e.errorCode ? ` ${e.errorCode}` : ''}
            </td>
            <td>
              <code>
                {e.keyId ? `key ${e.keyId} ` : ''}
                {JSON.stringify(e.context)}
              </code>
            </td>
          </tr>
        ))}
      </table>
      {oldest !== undefined && oldest > 1 && events.length === size ? (
        <p>
          <a href={`/admin/audit?before=${oldest}`}>Older events</a>
        </p>
      ) : null}
    </Layout>
  );
};
