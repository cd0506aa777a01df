import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { publishDue } from '../../src/ca/crl-publisher.ts';
import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import { x509 } from '../../src/ca/x509.ts';
import { events, type PoolWait } from '../../src/core/events.ts';
import { openDatabase } from '../../src/db/connect.ts';
import { metricsHandler } from '../../src/http/metrics.ts';
import { issueLeaf, opensslOcsp, pemFiles, waitFor } from '../revocation/helpers.ts';
import { type AcmeTestEnv, issue, resolveToLoopback, startAcmeEnv } from '../support/acme.ts';
import { startTestCa } from '../support/ca.ts';
import { createTestStore } from '../support/db.ts';
import { type CapturedLog, captureLog } from '../support/log.ts';
import { parsePrometheus, type Scrape, scrape } from '../support/prometheus.ts';

function serialOf(pem: string): string {
  return new x509.X509Certificate(pem.split(/(?<=-----END CERTIFICATE-----)/)[0]!).serialNumber.toLowerCase();
}

// What an operator's Prometheus and log pipeline see of a running server.
describe('GET /metrics and the operator log', () => {
  let env: AcmeTestEnv;
  let log: CapturedLog;
  let metricsUrl: string;
  let intermediateId: string;
  const delta = (before: Scrape, after: Scrape, name: string, labels: Record<string, string> = {}) =>
    after.value(name, labels) - before.value(name, labels);

  beforeAll(async () => {
    log = captureLog();
    env = await startAcmeEnv({ log: log.logger });
    metricsUrl = env.ca.server!.metricsUrl!;
    intermediateId = (await env.ca.ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.id;
  });
  afterAll(async () => env?.close());

  it('is served on the HTTP listener in the Prometheus text format', async () => {
    expect(metricsUrl).toBe(`${env.ca.httpUrl}/metrics`);
    const res = await fetch(metricsUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('# TYPE keyward_certificates_issued_total counter');
    expect(text).toContain('# TYPE keyward_issuance_duration_seconds histogram');
    expect(text).toContain('process_cpu_seconds_total');
  });

  it('counts an ACME issuance at every step and logs it once with serial, names, profile, issuer and requester', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const accountId = client.getAccountUrl().split('/').pop()!;
    const before = await scrape(metricsUrl);
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'metrics.internal' }], 'http-01');
    const after = await scrape(metricsUrl);
    const serial = serialOf(certPem);

    expect(
      delta(before, after, 'keyward_certificates_issued_total', { profile: 'tls-server', issuer: intermediateId }),
    ).toBe(1);
    expect(delta(before, after, 'keyward_issuance_duration_seconds_count', { profile: 'tls-server' })).toBe(1);
    expect(delta(before, after, 'keyward_acme_requests_total', { resource: 'new-order', outcome: 'ok' })).toBe(1);
    expect(delta(before, after, 'keyward_acme_requests_total', { resource: 'order/:id/finalize', outcome: 'ok' })).toBe(
      1,
    );
    expect(
      delta(before, after, 'keyward_acme_validations_total', { type: 'http-01', outcome: 'valid', problem: '' }),
    ).toBe(1);
    expect(
      delta(before, after, 'keyward_http_requests_total', {
        listener: 'https',
        method: 'POST',
        route: '/acme/new-order',
        status: '201',
      }),
    ).toBe(1);
    // Labels are route patterns, never raw paths: one series however many orders there are.
    expect(after.text).not.toMatch(/route="\/acme\/order\/[A-Za-z0-9_-]{10,}/);

    const lines = log.withMessage('certificate issued').filter((l) => l.serial === serial);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 30,
      names: ['metrics.internal'],
      profile: 'tls-server',
      issuer: intermediateId,
      requester: `acme:${accountId}`,
    });
  });

  it('counts a failed validation by type, outcome and problem, and the refused finalize by its problem type', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const before = await scrape(metricsUrl);
    resolveToLoopback(env, 'nobody-answers.internal');
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'nobody-answers.internal' }] });
    const [authz] = await client.getAuthorizations(order);
    const challenge = authz!.challenges.find((c) => c.type === 'http-01')!;
    await client.completeChallenge(challenge); // nothing is published at the token's URL
    await expect(client.waitForValidStatus(challenge)).rejects.toThrow();
    const csr = (await import('acme-client')).crypto.createCsr({ altNames: ['nobody-answers.internal'] });
    await expect(client.finalizeOrder(order, (await csr)[1])).rejects.toThrow();
    const after = await scrape(metricsUrl);

    const invalid = after
      .series('keyward_acme_validations_total')
      .filter((s) => s.labels.type === 'http-01' && s.labels.outcome === 'invalid');
    // The series this failure counted (a worker's earlier files may have counted other problems).
    const counted = invalid
      .map((s) => s.labels.problem!)
      .filter(
        (problem) =>
          delta(before, after, 'keyward_acme_validations_total', { type: 'http-01', outcome: 'invalid', problem }) > 0,
      );
    expect(counted).toEqual(['unauthorized']);
    expect(delta(before, after, 'keyward_acme_validations_total', { type: 'http-01', outcome: 'invalid' })).toBe(1);
    expect(
      delta(before, after, 'keyward_acme_requests_total', { resource: 'order/:id/finalize', outcome: 'orderNotReady' }),
    ).toBe(1);

    // The operator's log says which name failed, how, why, and for which account.
    const failed = log.withMessage('validation failed').filter((l) => l.identifier === 'nobody-answers.internal');
    expect(failed.at(-1)).toMatchObject({
      level: 30, // info
      type: 'http-01',
      outcome: 'invalid',
      problem: 'unauthorized',
      detail: expect.stringMatching(/.+/),
      account: client.getAccountUrl().split('/').pop(),
    });
  });

  it('reads shared state from the database at scrape time: audit head, queue depth, issuer expiry, CRL size', async () => {
    const db = env.ca.ctx.database.db;
    // A queued job, as another replica's challenge would leave it: due later, so no worker runs it.
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'queued.internal' }] });
    const [authz] = await client.getAuthorizations(order);
    const authzId = authz!.url.split('/').pop()!;
    const later = new Date(Date.now() + 3_600_000);
    await db
      .insertInto('acme_jobs')
      .values({
        id: 'queued-by-test',
        authz_id: authzId,
        status: 'queued',
        run_at: later,
        deadline: later,
        created_at: new Date(),
      })
      .execute();
    await publishDue(new RevocationPublisher(env.ca.ctx, 'test').crl, { force: true });

    const headBefore = Number((await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
    const s = await scrape(metricsUrl);
    const headAfter = Number((await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
    await db.deleteFrom('acme_jobs').where('id', '=', 'queued-by-test').execute();

    expect(s.value('keyward_database_up')).toBe(1);
    expect(s.value('keyward_audit_chain_head')).toBeGreaterThanOrEqual(headBefore);
    expect(s.value('keyward_audit_chain_head')).toBeLessThanOrEqual(headAfter);
    expect(s.value('keyward_validation_queue_depth', { state: 'queued' })).toBe(1);
    expect(s.value('keyward_validation_queue_depth', { state: 'due' })).toBe(0);
    for (const issuer of await env.ca.ctx.ca.issuers()) {
      const days = (issuer.not_after.getTime() - Date.now()) / 86_400_000;
      expect(s.value('keyward_issuer_expiry_days', { issuer: issuer.id, kind: issuer.kind })).toBeCloseTo(days, 1);
    }
    const crl = await db
      .selectFrom('crls')
      .select(['der'])
      .where('issuer_id', '=', intermediateId)
      .where('shard', '=', 0)
      .executeTakeFirstOrThrow();
    expect(s.value('keyward_crl_size_bytes', { issuer: intermediateId, shard: '0' })).toBe(crl.der!.length);
    expect(s.value('keyward_crl_publish_duration_seconds_count', { issuer: intermediateId })).toBeGreaterThanOrEqual(1);
  });

  it('counts OCSP answers by source and revocations by reason, and logs the revocation', async () => {
    const leaf = await issueLeaf(env.ca, { name: 'ocsp-metrics.internal' });
    const files = await pemFiles(env.ca, leaf);
    try {
      await waitFor(
        'an OCSP signer',
        async () =>
          (await env.ca.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
      );
      const before = await scrape(metricsUrl);
      for (let i = 0; i < 2; i++)
        expect((await opensslOcsp(env.ca, files, ['-cert', files.leaf, '-no_nonce'])).out).toContain(': good');
      await env.ca.ctx.ca.revoke(leaf.serial, 1, 'cli:operator');
      const after = await scrape(metricsUrl);
      expect(delta(before, after, 'keyward_ocsp_responses_total')).toBe(2);
      // The first answer is stored (signed now, or by the refresher already); the second comes from the store.
      expect(delta(before, after, 'keyward_ocsp_responses_total', { source: 'cache' })).toBeGreaterThanOrEqual(1);
      expect(delta(before, after, 'keyward_certificates_revoked_total', { reason: 'keyCompromise' })).toBe(1);
      expect(log.withMessage('certificate revoked').filter((l) => l.serial === leaf.serial)).toEqual([
        expect.objectContaining({ reason: 'keyCompromise', issuer: intermediateId, requester: 'cli:operator' }),
      ]);
    } finally {
      files.cleanup();
    }
  });

  it('logs a refused key operation as a warning naming key, action and principal, and counts it', async () => {
    const db = env.ca.ctx.database.db;
    const { key_id: keyId } = await db
      .selectFrom('issuers')
      .select('key_id')
      .where('id', '=', intermediateId)
      .executeTakeFirstOrThrow();
    const before = await scrape(metricsUrl);
    await db.updateTable('kms_keys').set({ state: 'Disabled' }).where('id', '=', keyId).execute();
    try {
      await expect(issueLeaf(env.ca, { name: 'refused.internal' })).rejects.toThrow(/Disabled/);
    } finally {
      await db.updateTable('kms_keys').set({ state: 'Enabled' }).where('id', '=', keyId).execute();
    }
    const after = await scrape(metricsUrl);
    expect(
      delta(before, after, 'keyward_kms_operations_total', {
        key: keyId!,
        action: 'sign-certificate',
        outcome: 'denied',
      }),
    ).toBe(1);
    expect(log.withMessage('key operation denied')).toEqual([
      expect.objectContaining({
        level: 40,
        key: keyId,
        action: 'sign-certificate',
        principal: 'keyward',
        error: 'KeyDisabled',
      }),
    ]);
  });

  it('writes no key material, no certificate bodies and no EAB secrets to the log', async () => {
    const { createEabKey } = await import('../../src/acme/eab.ts');
    const { secretBox } = await import('../../src/acme/wrap-secrets.ts');
    const eab = await createEabKey(secretBox(env.ca.ctx.kms), env.ca.ctx.database.db, { label: 'log-check' });
    const client = await env.client({ externalAccountBinding: { kid: eab.keyId, hmacKey: eab.hmacKey } });
    await client.createAccount({ termsOfServiceAgreed: true });
    await issue(env, client, [{ type: 'dns', value: 'secret-check.internal' }], 'http-01');
    const text = log.text();
    expect(log.withMessage('certificate issued').length).toBeGreaterThanOrEqual(2);
    expect(text).not.toContain(eab.hmacKey);
    expect(text).not.toMatch(/-----BEGIN|PRIVATE KEY|"d":"/);
  });
});

describe('metrics settings', () => {
  it('serves /metrics on its own address when metrics.listen is set, and not on the HTTP listener', async () => {
    const { freePort } = await import('../support/ca.ts');
    const port = await freePort();
    const ca = await startTestCa({ settings: { metrics: { listen: `127.0.0.1:${port}` } } });
    try {
      expect(ca.server!.metricsUrl).toBe(`http://127.0.0.1:${port}/metrics`);
      expect((await scrape(ca.server!.metricsUrl!)).value('keyward_database_up')).toBe(1);
      expect((await fetch(`${ca.httpUrl}/metrics`)).status).toBe(404);
    } finally {
      await ca.close();
    }
  });

  it('metrics.enabled: false serves no /metrics', async () => {
    const ca = await startTestCa({ settings: { metrics: { enabled: false } } });
    try {
      expect(ca.server!.metricsUrl).toBeUndefined();
      expect((await fetch(`${ca.httpUrl}/metrics`)).status).toBe(404);
    } finally {
      await ca.close();
    }
  });
});

// PGlite has no pool; the waits of PostgreSQL's are measured where a connection is handed out.
describe.runIf(!!process.env.DATABASE_URL)('database pool waits', () => {
  it('a query that finds every connection busy is counted, with how long it waited', async () => {
    const store = await createTestStore();
    const handle = await openDatabase({ url: store.databaseUrl, dataDir: store.dataDir, poolSize: 1 });
    const seen: PoolWait[] = [];
    const stop = events.poolWait.subscribe((e) => seen.push(e));
    try {
      const scrapeOnce = metricsHandler(handle);
      const read = async () => parsePrometheus(await (await scrapeOnce({} as never)).text());
      const before = await read();
      const { sql } = await import('kysely');
      await Promise.all([sql`SELECT pg_sleep(0.3)`.execute(handle.db), sql`SELECT 1`.execute(handle.db)]);
      const after = await read();
      expect(seen.length).toBeGreaterThanOrEqual(1);
      expect(seen.some((e) => e.seconds >= 0.2)).toBe(true);
      expect(after.value('keyward_db_pool_waits_total') - before.value('keyward_db_pool_waits_total')).toBe(
        seen.length,
      );
      expect(after.value('keyward_db_pool_connections', { state: 'max' })).toBe(1);
    } finally {
      stop();
      await handle.close();
      await store.cleanup();
    }
  });
});

// Shared state read at scrape time: a replica that did nothing reports what another one did.
describe.runIf(!!process.env.DATABASE_URL)('metrics of two replicas on one database', () => {
  it('the audit head and CRL size one replica produced are reported by the other', async () => {
    const a = await startTestCa();
    const b = await startTestCa({ store: a.store });
    try {
      await issueLeaf(a, { name: 'replica-a.internal' });
      await publishDue(new RevocationPublisher(a.ctx, 'test').crl, { force: true });
      const db = a.ctx.database.db;
      const head = Number((await db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
      const crl = await db
        .selectFrom('crls')
        .select(['issuer_id', 'der'])
        .where('shard', '=', 0)
        .executeTakeFirstOrThrow();
      const fromB = await scrape(b.server!.metricsUrl!);
      expect(fromB.value('keyward_audit_chain_head')).toBeGreaterThanOrEqual(head);
      expect(fromB.value('keyward_crl_size_bytes', { issuer: crl.issuer_id, shard: '0' })).toBe(crl.der!.length);
      const fromA = await scrape(a.server!.metricsUrl!);
      expect(fromA.value('keyward_crl_size_bytes', { issuer: crl.issuer_id, shard: '0' })).toBe(crl.der!.length);
    } finally {
      await b.close();
      await a.close();
    }
  });
});
