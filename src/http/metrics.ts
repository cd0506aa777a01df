import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { sql } from 'kysely';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import { events } from '../core/events.ts';
import type { DatabaseHandle } from '../db/connect.ts';

/**
 * Prometheus metrics (text format, prom-client). Two kinds:
 * - counters and histograms of what this process did, fed by the events of src/core/events.ts
 *   (one registry per process: Prometheus sums replicas);
 * - gauges of shared state (audit chain head, validation queue, issuer expiry, CRL sizes), read
 *   from the database at scrape time in one statement, so every replica reports the same truth.
 */
const processRegistry = new Registry();

const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
  return new Counter({ name, help, labelNames, registers: [processRegistry] });
}

function histogram<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  buckets = SECONDS_BUCKETS,
): Histogram<L> {
  return new Histogram({ name, help, labelNames, buckets, registers: [processRegistry] });
}

/** Increments for one label set, kept in a plain number and added to the counter at scrape time. */
interface Pending {
  labels: Record<string, string | number>;
  n: number;
}

/**
 * A counter that hot paths count into without prom-client's per-call work (label checks and a
 * label hash, a few microseconds against a cached OCSP answer's ~40): each label set gets a
 * `Pending` slot once, and the slots are added up when the metrics are read.
 */
function batchedCounter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
): { counter: Counter<L>; slot(labels: Record<L, string | number>): Pending } {
  const slots: Pending[] = [];
  const counter = new Counter<L>({
    name,
    help,
    labelNames,
    registers: [processRegistry],
    collect() {
      for (const s of slots)
        if (s.n > 0) {
          this.inc(s.labels as Partial<Record<L, string | number>>, s.n);
          s.n = 0;
        }
    },
  });
  return {
    counter,
    slot: (labels) => {
      const s = { labels, n: 0 };
      slots.push(s);
      return s;
    },
  };
}

const requests = batchedCounter(
  'keyward_http_requests_total',
  'HTTP requests answered, by listener, route and status',
  ['listener', 'method', 'route', 'status'],
);

const http = {
  requests: requests.counter,
  duration: histogram('keyward_http_request_duration_seconds', 'Time to answer an HTTP request', ['listener', 'route']),
};

let subscribed = false;

/** Subscribes the process registry to the events, once per process however many servers run. */
function subscribeOnce(): void {
  if (subscribed) return;
  subscribed = true;
  collectDefaultMetrics({ register: processRegistry });

  const acme = counter('keyward_acme_requests_total', 'ACME requests by resource and outcome (ok or problem type)', [
    'resource',
    'outcome',
  ]);
  events.acmeRequest.subscribe((e) => acme.inc({ resource: e.resource, outcome: e.problem ?? 'ok' }));

  const validations = counter('keyward_acme_validations_total', 'Challenge validation attempts by result', [
    'type',
    'outcome',
    'problem',
  ]);
  events.validation.subscribe((e) =>
    validations.inc({ type: e.type, outcome: e.outcome, problem: e.problem?.type ?? '' }),
  );

  const issued = counter('keyward_certificates_issued_total', 'Certificates issued, by profile and issuer', [
    'profile',
    'issuer',
  ]);
  const latency = histogram(
    'keyward_issuance_duration_seconds',
    'Signing core: serial reservation, signature and record of one certificate',
    ['profile'],
  );
  events.certificateIssued.subscribe((e) => {
    issued.inc({ profile: e.profile, issuer: e.issuerId });
    latency.observe({ profile: e.profile }, e.seconds);
  });

  const revoked = counter('keyward_certificates_revoked_total', 'Certificates revoked, by reason', ['reason']);
  events.certificateRevoked.subscribe((e) => revoked.inc({ reason: e.reason }));

  const crl = histogram('keyward_crl_publish_duration_seconds', 'Time to build, sign and store one CRL', ['issuer']);
  events.crlPublished.subscribe((e) => crl.observe({ issuer: e.issuerId }, e.seconds));

  const ocsp = batchedCounter('keyward_ocsp_responses_total', 'OCSP answers: cache (pre-signed), signed or error', [
    'source',
  ]);
  const bySource = new Map<string, Pending>();
  events.ocspAnswered.subscribe((e) => {
    let pending = bySource.get(e.source);
    if (pending === undefined) bySource.set(e.source, (pending = ocsp.slot({ source: e.source })));
    pending.n++;
  });

  const kms = counter('keyward_kms_operations_total', 'Key uses and changes by key, action and outcome', [
    'key',
    'action',
    'outcome',
  ]);
  events.keyOperation.subscribe((e) => {
    if (e.keyId !== null) kms.inc({ key: e.keyId, action: e.action, outcome: e.outcome });
  });

  const waits = counter('keyward_db_pool_waits_total', 'Database connection requests that had to queue', []);
  const waited = histogram('keyward_db_pool_wait_seconds', 'Time queued for a database connection', []);
  events.poolWait.subscribe((e) => {
    waits.inc();
    waited.observe(e.seconds);
  });
}

/** Counts each request by the route pattern that answered it (never the raw path: bounded labels). */
export function requestMetrics(listener: string): MiddlewareHandler {
  subscribeOnce();
  return async (c, next) => {
    const started = performance.now();
    await next();
    const pattern = routePath(c);
    // The middleware's own pattern means no route matched.
    const route = pattern === '/*' || pattern === '*' ? 'unmatched' : pattern;
    http.requests.inc({ listener, method: c.req.method, route, status: c.res.status });
    http.duration.observe({ listener, route }, (performance.now() - started) / 1000);
  };
}

/**
 * `requestMetrics` for answers given before the app (FastPath), whose route and status are known
 * in advance: the label sets are built once, not per request.
 */
export function routeMetrics(
  listener: string,
  method: string,
  route: string,
  status: number,
): (seconds: number) => void {
  subscribeOnce();
  const counted = requests.slot({ listener, method, route, status });
  const timed = { listener, route };
  return (seconds) => {
    counted.n++;
    http.duration.observe(timed, seconds);
  };
}

interface SharedState {
  audit_head: string | number | bigint | null;
  audit_checkpoint: string | number | bigint | null;
  queued: string | number | bigint;
  due: string | number | bigint;
  issuers: { id: string; kind: string; subject: string; notAfter: string }[];
  crls: { issuer: string; shard: number; bytes: number; thisUpdate: string }[];
}

/** Everything the shared-state gauges show, in one statement. */
async function readSharedState(database: DatabaseHandle): Promise<SharedState> {
  const { rows } = await sql<SharedState>`
    SELECT
      (SELECT seq FROM audit_head WHERE id = 1) AS audit_head,
      (SELECT max(seq) FROM audit_checkpoints) AS audit_checkpoint,
      (SELECT count(*) FROM acme_jobs WHERE status = 'queued') AS queued,
      (SELECT count(*) FROM acme_jobs WHERE status = 'queued' AND run_at <= now()) AS due,
      (SELECT coalesce(json_agg(json_build_object('id', id, 'kind', kind, 'subject', subject, 'notAfter', not_after)), '[]')
        FROM issuers) AS issuers,
      (SELECT coalesce(json_agg(json_build_object('issuer', issuer_id, 'shard', shard, 'bytes', octet_length(der),
        'thisUpdate', this_update)), '[]') FROM crls WHERE der IS NOT NULL) AS crls`.execute(database.db);
  return rows[0]!;
}

/** The gauges of one server's database, in a registry of their own, set at each scrape. */
function sharedStateGauges(database: DatabaseHandle) {
  const registry = new Registry();
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers: [registry] });
  const g = {
    up: gauge('keyward_database_up', '1 when the database answered the last scrape, else 0'),
    auditHead: gauge('keyward_audit_chain_head', 'Sequence number of the last audit event'),
    auditCheckpoint: gauge('keyward_audit_checkpoint_sequence', 'Sequence number of the last signed checkpoint'),
    queue: gauge('keyward_validation_queue_depth', 'Validation jobs waiting (due: runnable now)', ['state']),
    expiry: gauge('keyward_issuer_expiry_days', 'Days until each CA certificate expires', [
      'issuer',
      'kind',
      'subject',
    ]),
    crlBytes: gauge('keyward_crl_size_bytes', 'Size of the current CRL of each issuer and shard', ['issuer', 'shard']),
    crlAge: gauge('keyward_crl_age_seconds', 'Seconds since the current CRL was published', ['issuer', 'shard']),
    pool: gauge('keyward_db_pool_connections', 'Database connections of this process', ['state']),
  };

  async function refresh(): Promise<void> {
    const pool = database.poolStats?.();
    if (pool) for (const [state, n] of Object.entries(pool)) g.pool.set({ state }, n);
    let s: SharedState;
    try {
      s = await readSharedState(database);
    } catch {
      // The process's own metrics are still worth serving; the shared gauges keep their last values.
      g.up.set(0);
      return;
    }
    g.up.set(1);
    const now = Date.now();
    g.auditHead.set(Number(s.audit_head ?? 0));
    g.auditCheckpoint.set(Number(s.audit_checkpoint ?? 0));
    g.queue.set({ state: 'queued' }, Number(s.queued));
    g.queue.set({ state: 'due' }, Number(s.due));
    g.expiry.reset();
    for (const i of s.issuers)
      g.expiry.set(
        { issuer: i.id, kind: i.kind, subject: i.subject },
        (new Date(i.notAfter).getTime() - now) / 86_400_000,
      );
    g.crlBytes.reset();
    g.crlAge.reset();
    for (const c of s.crls) {
      const labels = { issuer: c.issuer, shard: String(c.shard) };
      g.crlBytes.set(labels, c.bytes);
      g.crlAge.set(labels, (now - new Date(c.thisUpdate).getTime()) / 1000);
    }
  }
  return { registry, refresh };
}

/** `GET /metrics` for one server: this process's counters plus its database's gauges. */
export function metricsHandler(database: DatabaseHandle): (c: Context) => Promise<Response> {
  subscribeOnce();
  const shared = sharedStateGauges(database);
  return async () => {
    await shared.refresh();
    const body = (await processRegistry.metrics()) + (await shared.registry.metrics());
    return new Response(body, { headers: { 'content-type': processRegistry.contentType } });
  };
}
