import { sql } from 'kysely';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { seq } from '../../src/ca/der.ts';
import { issuerHashes, makeCertId } from '../../src/ca/ocsp.ts';
import { REVOCATION_CHANNEL } from '../../src/ca/revocation.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { issueLeaf, waitFor, waitForPresigned } from './helpers.ts';

// Pre-signed OCSP answers are served from process memory. What a relying party must never see is
// a stale "good": a revocation drops the answer on the replica that revoked at once, and on every
// other replica through the database's notifications.

async function ocspUrl(ca: TestCa, serial: string): Promise<string> {
  const intermediate = (await ca.ctx.ca.issuers()).find((i) => i.kind === 'intermediate')!;
  const certId = makeCertId(issuerHashes(intermediate.certificate), 'sha1', Buffer.from(serial, 'hex'));
  const request = seq(seq(seq(seq(certId.raw))));
  return `${ca.httpUrl}/ocsp/${encodeURIComponent(Buffer.from(request).toString('base64'))}`;
}

/** The certStatus of the one SingleResponse, read with pkijs. */
async function status(url: string): Promise<string> {
  const res = await fetch(url);
  if (res.status !== 200) return `HTTP ${res.status}`;
  const ocsp = pkijs.OCSPResponse.fromBER(new Uint8Array(await res.arrayBuffer()));
  const basic = pkijs.BasicOCSPResponse.fromBER(new Uint8Array(ocsp.responseBytes!.response.valueBlock.valueHexView));
  const tag = (basic.tbsResponseData.responses[0]!.certStatus as { idBlock: { tagNumber: number } }).idBlock.tagNumber;
  return ['good', 'revoked', 'unknown'][tag] ?? `tag ${tag}`;
}

describe('OCSP answers in memory', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ settings: { revocation: { crlPublishDelay: '3s' } } });
    await waitFor(
      'an OCSP signer',
      async () => (await ca.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
    );
  });
  afterAll(async () => ca?.close());

  it('serves a repeated lookup from memory, and a revocation on this replica replaces it at once', async () => {
    const leaf = await issueLeaf(ca);
    await waitForPresigned(ca, leaf.serial);
    const url = await ocspUrl(ca, leaf.serial);
    const first = new Uint8Array(await (await fetch(url)).arrayBuffer());
    // Drop the stored answer behind the server's back: an answer from memory does not notice.
    await ca.ctx.database.db.deleteFrom('ocsp_responses').where('serial', '=', leaf.serial).execute();
    const second = new Uint8Array(await (await fetch(url)).arrayBuffer());
    expect(Buffer.from(second).equals(Buffer.from(first))).toBe(true);
    expect(await status(url)).toBe('good');

    await ca.ctx.ca.revoke(leaf.serial, 1, 'test');
    expect(await status(url)).toBe('revoked');
  });
});

// PGlite admits one process, so a second replica needs PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('OCSP answers in memory, two replicas', () => {
  let a: TestCa;
  let b: TestCa;
  beforeAll(async () => {
    a = await startTestCa({ settings: { revocation: { crlPublishDelay: '3s' } } });
    b = await startTestCa({ store: a.store, settings: { revocation: { crlPublishDelay: '3s' } } });
    await waitFor(
      'an OCSP signer',
      async () => (await a.ctx.database.db.selectFrom('ocsp_signers').select('id').executeTakeFirst()) !== undefined,
    );
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it("a revocation on another replica drops this replica's answer", async () => {
    const leaf = await issueLeaf(a);
    await waitForPresigned(a, leaf.serial);
    const url = await ocspUrl(a, leaf.serial);
    expect(await status(url)).toBe('good');
    expect(await status(url)).toBe('good');
    await b.ctx.ca.revoke(leaf.serial, 1, 'test');
    await waitFor('the revoked answer on the other replica', async () => (await status(url)) === 'revoked', 2_000);
  });

  it('a revocation whose notification was lost still reaches the answer', async () => {
    const leaf = await issueLeaf(a);
    await waitForPresigned(a, leaf.serial);
    const url = await ocspUrl(a, leaf.serial);
    expect(await status(url)).toBe('good');
    // Cut both replicas' revocation LISTEN connections, then revoke at once: the notification is lost.
    const { rows } = await sql<{ n: number }>`
      SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND query = ${`LISTEN ${REVOCATION_CHANNEL}`}`.execute(a.ctx.database.db);
    expect(rows[0]!.n).toBe(2);
    await b.ctx.ca.revoke(leaf.serial, 1, 'test');
    // Not cached while listening is down, and cleared when it resumes (within a second or so).
    await waitFor('the revoked answer after reconnecting', async () => (await status(url)) === 'revoked', 3_000);
  });
});
