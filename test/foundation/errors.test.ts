import { request } from 'node:https';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { callAdmin } from '../../src/http/admin-client.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli } from '../support/cli.ts';

function get(url: string, ca: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    })
      .on('error', reject)
      .end();
  });
}

// One error model, three renderers: the HTTP APIs (problem+json), the CLI (text or --json, with
// the kind's exit status) and the admin socket (the same error on the other side).
describe('errors as each transport renders them', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa();
  });
  afterAll(async () => {
    await ca?.close();
  });

  it('HTTP: a refusal is problem+json, and an ACME one still carries a nonce and the index link', async () => {
    const res = await get(`${ca.httpsUrl}/acme/new-order`, ca.rootPem);
    expect(res.status).toBe(405);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers.allow).toBe('POST');
    expect(res.headers['replay-nonce']).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(res.headers.link).toContain('rel="index"');
    expect(JSON.parse(res.body)).toMatchObject({
      type: 'urn:ietf:params:acme:error:malformed',
      status: 405,
      code: 'methodNotAllowed',
    });
    const missing = await get(`${ca.httpsUrl}/no/such/thing`, ca.rootPem);
    expect([missing.status, JSON.parse(missing.body).code]).toEqual([404, 'notFound']);
  });

  it('CLI: the kind names the exit status; --json prints the error as JSON', async () => {
    const text = await cli(['certs', 'show', '00ff'], ca.env, { context: ca.ctx });
    expect(text.code).toBe(3);
    expect(text.stderr).toBe('keyward: notFound: no certificate with serial 00ff\n');
    const json = await cli(['revoke', '00ff', '--json'], ca.env, { context: ca.ctx });
    expect(json.code).toBe(3);
    expect(json.stdout).toBe('');
    expect(JSON.parse(json.stderr)).toEqual({
      error: { kind: 'notFound', code: 'notFound', detail: 'no certificate with serial 00ff' },
    });
    const usage = await cli(['revoke', '--json'], ca.env, { context: ca.ctx });
    expect(usage.code).toBe(2);
    expect(JSON.parse(usage.stderr).error.kind).toBe('usage');
  });

  it('admin socket: a refusal inside the server comes back as the same error', async () => {
    const remote = callAdmin(ca.server!.adminSocket, 'certs.show', { serial: '00ff', principal: 'test' });
    await expect(remote).rejects.toMatchObject({
      kind: 'notFound',
      code: 'notFound',
      message: 'no certificate with serial 00ff',
    });
    await expect(callAdmin(ca.server!.adminSocket, 'certs.show', [])).rejects.toMatchObject({ kind: 'malformed' });
  });
});
