import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ariCertId } from '../../src/ca/ari.ts';
import { publishCrl } from '../../src/ca/crl-publisher.ts';
import { RevocationPublisher } from '../../src/ca/revocation-publisher.ts';
import { acquireLease } from '../../src/db/lease.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { openssl } from '../support/pki.ts';
import { httpsGet, issueLeaf, pemFiles, waitFor } from './helpers.ts';

const crlNumberOf = (text: string): number => Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(text)?.[1]);

// CRLs and ACME Renewal Information, fetched the way relying parties and ACME clients fetch them.
describe('CRLs and renewal information', () => {
  let ca: TestCa;
  let files: Awaited<ReturnType<typeof pemFiles>>;
  let issuerId: string;

  beforeAll(async () => {
    ca = await startTestCa({ settings: { revocation: { crlPublishDelay: '3s' } } });
    files = await pemFiles(ca);
    issuerId = (await ca.ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!.id;
    // The server publishes its first CRLs as it starts; a publish of ours while it holds a shard's
    // lease would find that shard busy.
    await waitFor(
      'the CRLs published at start-up',
      async () =>
        (await fetch(`${ca.httpUrl}/crl/${issuerId}.crl`)).status === 200 &&
        !(await ca.ctx.database.db
          .selectFrom('leases')
          .select('name')
          .where('name', 'like', 'crl:%')
          .executeTakeFirst()),
    );
  });
  afterAll(async () => {
    files?.cleanup();
    await ca?.close();
  });

  async function fetchCrl(headers: Record<string, string> = {}): Promise<{ res: Response; text: string }> {
    const res = await fetch(`${ca.httpUrl}/crl/${issuerId}.crl`, { headers });
    if (res.status !== 200) return { res, text: '' };
    const file = files.file(`crl-${Date.now()}.der`, new Uint8Array(await res.arrayBuffer()));
    const r = openssl(['crl', '-inform', 'DER', '-in', file, '-CAfile', files.chain, '-verify', '-noout', '-text']);
    return { res, text: `${r.stdout}${r.stderr}` };
  }

  it('publishes a signed CRL listing a revoked serial with its reason; the number increases; ETag gives 304', async () => {
    const leaf = await issueLeaf(ca);
    const rev = await cli(['revoke', leaf.serial, '--reason', 'superseded'], ca.env, { context: ca.ctx });
    expect(rev.code, rev.stderr).toBe(0);
    const pub = await cli(['crl', 'publish', '--json'], ca.env, { context: ca.ctx });
    expect(pub.code, pub.stderr).toBe(0);
    const round = JSON.parse(pub.stdout);
    expect(round.published.map((p: { url: string }) => p.url)).toContain(`${ca.httpUrl}/crl/${issuerId}.crl`);

    const first = await fetchCrl();
    expect(first.res.status).toBe(200);
    expect(first.res.headers.get('content-type')).toBe('application/pkix-crl');
    expect(first.text).toContain('verify OK');
    expect(first.text).toContain(`Serial Number: ${leaf.serial.toUpperCase()}`);
    expect(first.text).toContain('Superseded');
    expect(first.text).toContain(`URI:${ca.httpUrl}/crl/${issuerId}.crl`); // issuingDistributionPoint
    expect(first.text).toContain('Authority Key Identifier');
    const etag = first.res.headers.get('etag')!;
    const maxAge = Number(/max-age=(\d+)/.exec(first.res.headers.get('cache-control') ?? '')?.[1]);
    expect(maxAge).toBeGreaterThan(23 * 3600);
    expect(maxAge).toBeLessThanOrEqual(24 * 3600);
    expect(Date.parse(first.res.headers.get('last-modified')!)).toBeLessThanOrEqual(Date.now());

    const notModified = await fetch(`${ca.httpUrl}/crl/${issuerId}.crl`, { headers: { 'if-none-match': etag } });
    expect(notModified.status).toBe(304);

    expect((await cli(['crl', 'publish'], ca.env, { context: ca.ctx })).code).toBe(0);
    const second = await fetchCrl({ 'if-none-match': etag });
    expect(second.res.status).toBe(200);
    expect(crlNumberOf(second.text)).toBe(crlNumberOf(first.text) + 1);
    expect(second.res.headers.get('etag')).not.toBe(etag);

    expect((await fetch(`${ca.httpUrl}/crl/${issuerId}-7.crl`)).status).toBe(404);
    expect((await fetch(`${ca.httpUrl}/crl/nonsense.crl`)).status).toBe(404);
  });

  it('publishes by itself within crlPublishDelay of a revocation', async () => {
    const leaf = await issueLeaf(ca);
    await ca.ctx.ca.revoke(leaf.serial, 1, 'test');
    const started = Date.now();
    const text = await waitFor('the CRL to list the revocation', async () => {
      const { text } = await fetchCrl();
      return text.includes(leaf.serial.toUpperCase()) ? text : undefined;
    });
    // Triggered by the revocation, not the periodic round (hours away): crlPublishDelay (3 s) plus
    // room for a loaded machine.
    expect(Date.now() - started).toBeLessThan(3_000 + 12_000);
    expect(text).toContain('Key Compromise');
  });

  it('two publishers at once make one CRL number step; a dead replica loses its lease', async () => {
    const issuer = (await ca.ctx.ca.issuers()).find((i) => i.id === issuerId)!;
    const a = new RevocationPublisher(ca.ctx, 'replica-a');
    const b = new RevocationPublisher(ca.ctx, 'replica-b');
    const number = async () =>
      Number(
        (
          await ca.ctx.database.db
            .selectFrom('crls')
            .select('crl_number')
            .where('issuer_id', '=', issuerId)
            .where('shard', '=', 0)
            .executeTakeFirstOrThrow()
        ).crl_number,
      );
    const before = await number();
    const results = await Promise.all([publishCrl(a.crl, issuer, 0), publishCrl(b.crl, issuer, 0)]);
    // Overlapping, one of them finds the lease taken; one after the other (a busy machine), each
    // publishes. Either way every published CRL has a number of its own, one step apart.
    const published = results.filter((r) => r !== undefined);
    expect(published.length).toBeGreaterThanOrEqual(1);
    expect(new Set(published.map((r) => r.crlNumber)).size).toBe(published.length);
    const stepped = before + published.length;
    expect(await number()).toBe(stepped);

    // A replica that took the lease and died: nobody publishes until its lease runs out.
    expect(await acquireLease(ca.ctx.database.db, `crl:${issuerId}:0`, 'dead-replica', 400)).toBe(true);
    expect(await publishCrl(a.crl, issuer, 0)).toBeUndefined();
    expect(await number()).toBe(stepped);
    await new Promise((r) => setTimeout(r, 600));
    expect((await publishCrl(a.crl, issuer, 0))?.crlNumber).toBe(String(stepped + 1));
  });

  describe('ACME Renewal Information', () => {
    const ari = (certId: string) => httpsGet(`${ca.httpsUrl}/acme/renewal-info/${certId}`, ca.rootPem);

    it('suggests the last third of the lifetime for a fresh certificate, with Retry-After', async () => {
      const leaf = await issueLeaf(ca, { lifetimeMs: 30 * 86_400_000 });
      const issuer = (await ca.ctx.ca.issuers()).find((i) => i.id === leaf.issuerId)!;
      const res = await ari(ariCertId(issuer.certificate, leaf.serial));
      expect(res.status, res.body).toBe(200);
      expect(res.headers['retry-after']).toBe('21600');
      const { suggestedWindow } = JSON.parse(res.body);
      const lifetime = leaf.notAfter.getTime() - leaf.notBefore.getTime();
      expect(Date.parse(suggestedWindow.start)).toBe(leaf.notBefore.getTime() + Math.floor((lifetime * 2) / 3));
      expect(Date.parse(suggestedWindow.end)).toBe(leaf.notAfter.getTime());
      expect(Date.parse(suggestedWindow.start)).toBeGreaterThan(Date.now());
    });

    it('an old certificate is already inside its window; a revoked one gets a window that has begun', async () => {
      // A 1 s certificate is 61 s long with the back-dating: two thirds of it are already gone.
      const old = await issueLeaf(ca, { lifetimeMs: 1000 });
      const issuer = (await ca.ctx.ca.issuers()).find((i) => i.id === old.issuerId)!;
      const o = JSON.parse((await ari(ariCertId(issuer.certificate, old.serial))).body);
      expect(Date.parse(o.suggestedWindow.start)).toBeLessThan(Date.now());

      const leaf = await issueLeaf(ca, { lifetimeMs: 30 * 86_400_000 });
      await ca.ctx.ca.revoke(leaf.serial, 4, 'test');
      const r = JSON.parse((await ari(ariCertId(issuer.certificate, leaf.serial))).body);
      const now = Date.now();
      // RFC 9773 §4.2: begun, and long enough to act in (not a zero-length window at now).
      expect(Date.parse(r.suggestedWindow.start)).toBeLessThanOrEqual(now - 3_590_000);
      expect(Date.parse(r.suggestedWindow.end)).toBeGreaterThan(now + 3_000_000);
      expect(Date.parse(r.suggestedWindow.end)).toBeLessThanOrEqual(now + 3_610_000);
    });

    it('refuses a malformed certID with a malformed problem, an unknown one with 404', async () => {
      const leaf = await issueLeaf(ca);
      const issuer = (await ca.ctx.ca.issuers()).find((i) => i.id === leaf.issuerId)!;
      const good = ariCertId(issuer.certificate, leaf.serial);
      const [aki] = good.split('.');
      for (const bad of ['nodot', `${aki}.`, `${aki}.a+b`, `${aki}.AA==`, `${aki}.gA`, `${good}.x`, `${aki}.AAE`]) {
        const res = await ari(encodeURIComponent(bad));
        expect(res.status, bad).toBe(400);
        expect(res.headers['content-type']).toContain('application/problem+json');
        expect(JSON.parse(res.body).type).toBe('urn:ietf:params:acme:error:malformed');
      }
      const unknown = await ari(`${aki}.${Buffer.from('0123456789', 'hex').toString('base64url')}`);
      expect(unknown.status).toBe(404);
      expect(unknown.headers['content-type']).toContain('application/problem+json');
      const otherIssuer = await ari(`${Buffer.alloc(20, 7).toString('base64url')}.${good.split('.')[1]}`);
      expect(otherIssuer.status).toBe(404);
      // Nothing changed: the certificate is still valid.
      expect((await ca.ctx.ca.certificate(leaf.serial)).status).toBe('valid');
    });
  });
});
