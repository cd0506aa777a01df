/**
 * http-01 (RFC 8555 §8.3; IP identifiers RFC 8738 §4-5).
 *
 * The request goes to an address chosen by the injected resolver, with the name only in the Host
 * header, so what is checked is what DNS says and nothing the OS adds. Redirects are followed by
 * hand because each hop needs the same resolver, port policy and shared deadline.
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';

import { isDnsName, normalizeDnsName } from '../core/dns-name.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { type AttemptError, startAttempt } from './attempt.ts';
import { beforeDeadline, truncate } from './deadline.ts';
import { connectAddresses, identifierProblem, urlHost } from './identifier.ts';
import type { DnsResolver } from './resolver.ts';
import { failure, type ValidationConfig, type ValidationOutcome } from './types.ts';

const USER_AGENT = 'Keyward-validation (+RFC 8555)';
/** Only the redirects whose method stays GET without surprises (303 is not a "moved" answer). */
const REDIRECT_STATUSES = new Set([301, 302, 307, 308]);
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
const MAX_REDIRECT_URL_LENGTH = 2000;
const MAX_ECHO = 128;

type Attempt =
  | { kind: 'response'; address: string; status: number; location?: string; body: Buffer; tooLarge: boolean }
  | AttemptError;

export async function checkHttp01(
  id: AcmeIdentifier,
  token: string,
  keyAuthorization: string,
  cfg: ValidationConfig,
  resolver: DnsResolver,
): Promise<ValidationOutcome> {
  const bad = identifierProblem(id, false);
  if (bad) return { ok: false, problem: bad };
  // The token becomes a URL path segment; our own tokens are base64url, anything else is a bug.
  if (!TOKEN.test(token)) return failure('malformed', 'Challenge token is not base64url');

  const deadline = Date.now() + cfg.timeoutMs;
  const host = id.type === 'dns' ? normalizeDnsName(id.value) : id.value;
  let url = new URL(`http://${urlHost(host)}:${cfg.httpPort}/.well-known/acme-challenge/${token}`);
  const seen = new Set<string>([url.href]);
  const used: string[] = [];

  for (let redirects = 0; ; redirects++) {
    const hostname = unbracket(url.hostname);
    const targets = await beforeDeadline(connectAddresses(hostname, resolver), deadline, () => ({
      problem: { type: 'dns' as const, detail: `Timeout looking up A/AAAA for ${hostname}` },
    }));
    if ('problem' in targets) return { ok: false, problem: targets.problem };

    const res = await fetchFirstReachable(url, targets.addresses, cfg, deadline, used);
    if (res.kind === 'error') return { ok: false, problem: res.problem };
    const where = `${res.address}: Invalid response from ${url.href}`;

    if (REDIRECT_STATUSES.has(res.status) && res.location !== undefined) {
      if (redirects >= cfg.maxRedirects) {
        return failure('connection', `${where}: Too many redirects (more than ${cfg.maxRedirects})`);
      }
      const next = redirectTarget(res.location, url, cfg);
      if (typeof next === 'string') return failure('connection', `${where}: ${next}`);
      if (seen.has(next.href)) return failure('connection', `${where}: Redirect loop detected at ${next.href}`);
      seen.add(next.href);
      url = next;
      continue;
    }
    if (res.status !== 200) return failure('unauthorized', `${where}: ${res.status}`);
    if (res.tooLarge) {
      return failure('incorrectResponse', `${where}: response body larger than ${cfg.maxBodyBytes} bytes`);
    }
    // RFC 8555 §8.3: whitespace at the end of the body is ignored; anywhere else it is a mismatch.
    const body = res.body.toString('utf8').replace(/\s+$/u, '');
    if (body === keyAuthorization) return { ok: true, addressesUsed: [...new Set(used)] };
    return failure(
      'incorrectResponse',
      `${where}: The key authorization file from the server did not match this challenge. ` +
        `Expected ${JSON.stringify(keyAuthorization)} (got ${JSON.stringify(truncate(body, MAX_ECHO))})`,
    );
  }
}

/** Tries the addresses in order, moving on only when the connection itself could not be made. */
async function fetchFirstReachable(
  url: URL,
  addresses: string[],
  cfg: ValidationConfig,
  deadline: number,
  used: string[],
): Promise<Attempt> {
  let last: Attempt | undefined;
  for (const address of addresses) {
    used.push(address);
    last = await fetchOnce(url, address, cfg, deadline);
    if (last.kind === 'response' || !last.beforeConnect || Date.now() >= deadline) return last;
  }
  if (!last) throw new Error('no addresses to try');
  return last;
}

function fetchOnce(url: URL, address: string, cfg: ValidationConfig, deadline: number): Promise<Attempt> {
  return new Promise<Attempt>((resolve) => {
    const isHttps = url.protocol === 'https:';
    const hostname = unbracket(url.hostname);
    const port = Number(url.port || (isHttps ? 443 : 80));
    const { finish, error, connected, markConnected } = startAttempt<Attempt>({
      address,
      where: `${address}: Fetching ${url.href}`,
      deadline,
      timeoutAfterConnect: 'Timeout after connect (your server may be slow or overloaded)',
      resolve,
      close: () => req.destroy(),
    });

    const options: https.RequestOptions = {
      host: address,
      port,
      method: 'GET',
      path: `${url.pathname}${url.search}`,
      headers: { Host: url.host, 'User-Agent': USER_AGENT, Accept: '*/*', Connection: 'close' },
      agent: false,
      setHost: false,
      // Certificates are not checked on https redirect targets: the https hop only carries the
      // key authorization, which proves control by itself, and the name may have no cert yet.
      ...(isHttps
        ? {
            rejectUnauthorized: false,
            minVersion: 'TLSv1.2' as const,
            ...(isIP(hostname) ? {} : { servername: hostname }),
          }
        : {}),
    };

    const onResponse = (res: IncomingMessage): void => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status !== 200) {
        finish({
          kind: 'response',
          address,
          status,
          ...(location !== undefined ? { location } : {}),
          body: Buffer.alloc(0),
          tooLarge: false,
        });
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > cfg.maxBodyBytes) {
        finish({ kind: 'response', address, status, body: Buffer.alloc(0), tooLarge: true });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > cfg.maxBodyBytes) {
          finish({ kind: 'response', address, status, body: Buffer.alloc(0), tooLarge: true });
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => finish({ kind: 'response', address, status, body: Buffer.concat(chunks), tooLarge: false }));
      res.on('error', (err) => error('connection', describeSocketError(err), false));
    };

    const req = (isHttps ? https : http).request(options, onResponse);
    req.on('socket', (socket) => socket.once('connect', markConnected));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (isHttps && connected() && isTlsError(err)) error('tls', `TLS error: ${err.message}`, false);
      else error('connection', describeSocketError(err), !connected());
    });
    req.end();
  });
}

/** The next URL to fetch, or why the redirect is refused. */
function redirectTarget(location: string, current: URL, cfg: ValidationConfig): URL | string {
  if (location.length > MAX_REDIRECT_URL_LENGTH) return `Redirect target longer than ${MAX_REDIRECT_URL_LENGTH} bytes`;
  let next: URL;
  try {
    next = new URL(location, current);
  } catch {
    return `Invalid redirect target ${JSON.stringify(truncate(location, MAX_ECHO))}`;
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    return `Redirect to unsupported scheme ${JSON.stringify(next.protocol.replace(/:$/, ''))}; only http and https are followed`;
  }
  // The configured ports stand in for 80 and 443, so a URL without a port means the configured one.
  const allowed = next.protocol === 'http:' ? cfg.httpPort : cfg.tlsAlpnPort;
  const port = next.port === '' ? allowed : Number(next.port);
  if (port !== allowed) {
    return `Redirect to port ${port} refused; only ${cfg.httpPort} (http) and ${cfg.tlsAlpnPort} (https) are allowed`;
  }
  next.port = String(allowed);
  const host = unbracket(next.hostname);
  if (isIP(host) === 0 && !isDnsName(normalizeDnsName(host)))
    return `Redirect to invalid host ${JSON.stringify(truncate(host, MAX_ECHO))}`;
  next.username = '';
  next.password = '';
  next.hash = '';
  return next;
}

function unbracket(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /SSL|TLS|alert|handshake/i.test(err.message);
}

export function describeSocketError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'Connection refused';
    case 'ECONNRESET':
      return 'Connection reset by peer';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'No route to host';
    case 'ETIMEDOUT':
      return 'Timeout during connect (likely firewall problem)';
    case 'EPIPE':
      return 'Connection closed by peer';
    default:
      if (err.code?.startsWith('HPE_')) return 'Malformed HTTP response';
      if (err.message === 'socket hang up' || err.message === 'aborted')
        return 'Connection closed before a complete response';
      return truncate(err.message, MAX_ECHO);
  }
}
