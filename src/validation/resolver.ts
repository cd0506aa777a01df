/**
 * DNS look-ups for validation, injected into every check so tests can aim them at a local server.
 *
 * Built on node's c-ares `Resolver` rather than `dns.lookup`: c-ares queries the configured server
 * directly and never reads /etc/hosts or nsswitch, so a validation sees exactly what DNS says.
 * c-ares accepts `host:port` servers (any port), and retries truncated UDP answers over TCP itself.
 */
import { promises as dns } from 'node:dns';

import { caaServer, cachedCaaLookup } from './caa-client.ts';
import { type CaaRecord, type DnsFailureKind, DnsLookupError } from './dns-lookup-error.ts';
import type { ValidationConfig } from './types.ts';

export { type CaaRecord, type DnsFailureKind, DnsLookupError } from './dns-lookup-error.ts';

/**
 * The look-ups validation needs. Every method returns `[]` for NODATA and throws `DnsLookupError`
 * for NXDOMAIN, server failures and timeouts, so callers decide what an absent name means.
 * Record sets reached through a CNAME chain are returned as if they were the name's own.
 */
export interface DnsResolver {
  resolveA(name: string): Promise<string[]>;
  resolveAAAA(name: string): Promise<string[]>;
  /** Each record's character-strings, unjoined. */
  resolveTxt(name: string): Promise<string[][]>;
  resolveCname(name: string): Promise<string[]>;
  resolveCaa(name: string): Promise<CaaRecord[]>;
}

export interface DnsResolverOptions {
  /** `host:port` or `[v6]:port`; undefined = the servers in the system's resolver configuration. */
  server?: string;
  /** Bound for one query, retries included. */
  timeoutMs?: number;
}

const DEFAULT_QUERY_TIMEOUT_MS = 5_000;

export function resolverForConfig(cfg: Pick<ValidationConfig, 'dnsResolver' | 'timeoutMs'>): DnsResolver {
  return createDnsResolver({
    ...(cfg.dnsResolver !== undefined ? { server: cfg.dnsResolver } : {}),
    timeoutMs: cfg.timeoutMs,
  });
}

export function createDnsResolver(opts: DnsResolverOptions = {}): DnsResolver {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  // One c-ares channel for every query (a channel reads the system's resolver files and opens its
  // sockets when made). c-ares bounds each query itself: the per-try timeout doubles on the retry,
  // so t + 2t fits in timeoutMs. `cancel()` would cancel every query on the channel, so a query
  // past our deadline is abandoned instead and c-ares ends it on its own shortly after.
  const make = (): dns.Resolver => {
    const r = new dns.Resolver({ timeout: Math.max(50, Math.floor(timeoutMs / 3)), tries: 2 });
    if (opts.server !== undefined) r.setServers([opts.server]);
    return r;
  };
  let shared: dns.Resolver;
  try {
    shared = make();
  } catch (err) {
    // Fail at construction, not at the first validation, when the configured server is unusable.
    throw new Error(`dnsResolver must be 'ip:port' or '[ipv6]:port', got ${JSON.stringify(opts.server)}`, {
      cause: err,
    });
  }

  // CAA answers are kept for their TTL, which c-ares does not report: our own client asks for them.
  const caa = cachedCaaLookup(caaServer(opts.server), timeoutMs);

  async function run<T>(rrtype: string, name: string, q: (r: dns.Resolver) => Promise<T>, empty: T): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DnsLookupError('TIMEOUT', rrtype, name)), timeoutMs);
    });
    const query = q(shared);
    // An abandoned query still settles later; nobody waits for it.
    query.catch(() => {});
    try {
      return await Promise.race([query, deadline]);
    } catch (err) {
      if (err instanceof DnsLookupError) throw err;
      const code = (err as NodeJS.ErrnoException | undefined)?.code;
      if (code === dns.NODATA) return empty;
      throw new DnsLookupError(kindOf(code), rrtype, name, code);
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    resolveA: (name) => run('A', name, (r) => r.resolve4(name), []),
    resolveAAAA: (name) => run('AAAA', name, (r) => r.resolve6(name), []),
    resolveTxt: (name) => run('TXT', name, (r) => r.resolveTxt(name), []),
    resolveCname: (name) => run('CNAME', name, (r) => r.resolveCname(name), []),
    resolveCaa: caa,
  };
}

function kindOf(code: string | undefined): DnsFailureKind {
  switch (code) {
    case dns.NOTFOUND:
      return 'NXDOMAIN';
    case dns.SERVFAIL:
      return 'SERVFAIL';
    case dns.REFUSED:
      return 'REFUSED';
    case dns.TIMEOUT:
    case dns.CANCELLED:
      return 'TIMEOUT';
    default:
      return 'ERROR';
  }
}
