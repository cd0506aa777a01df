import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { x509 } from '../../src/ca/x509.ts';
import { type AcmeTestEnv, issue, startAcmeEnv } from '../support/acme.ts';

let env: AcmeTestEnv;
let workDir: string;

beforeAll(async () => {
  env = await startAcmeEnv();
  workDir = mkdtempSync(join(tmpdir(), 'kw-acme-'));
});
afterAll(async () => {
  await env?.close();
  rmSync(workDir, { recursive: true, force: true });
});

const PEM_CHAIN = /^(-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END CERTIFICATE-----\n)+$/;

function certs(pem: string): x509.X509Certificate[] {
  return pem
    .split(/(?<=-----END CERTIFICATE-----\n)/)
    .filter((b) => b.trim())
    .map((b) => new x509.X509Certificate(b));
}

function sanValues(cert: x509.X509Certificate): string[] {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return (ext?.names.items ?? []).map((n) => n.value).sort();
}

function opensslVerify(chainPem: string): string {
  const [leaf, intermediate] = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
  writeFileSync(join(workDir, 'root.pem'), env.ca.rootPem);
  writeFileSync(join(workDir, 'leaf.pem'), leaf!);
  writeFileSync(join(workDir, 'intermediate.pem'), intermediate!);
  return execFileSync('openssl', ['verify', '-CAfile', 'root.pem', '-untrusted', 'intermediate.pem', 'leaf.pem'], {
    cwd: workDir,
    encoding: 'utf8',
  });
}

describe('issuance with acme-client', () => {
  it('issues with http-01; the chain is leaf then intermediate and verifies with openssl', async () => {
    const client = await env.client();
    const account = await client.createAccount({ termsOfServiceAgreed: true, contact: ['mailto:ops@example.test'] });
    expect(account.status).toBe('valid');
    const { certPem, order } = await issue(
      env,
      client,
      [
        { type: 'dns', value: 'web.example.test' },
        { type: 'dns', value: 'api.example.test' },
      ],
      'http-01',
    );
    expect(order.status).toBe('valid');
    expect(certPem).toMatch(PEM_CHAIN);
    const [leaf, inter] = certs(certPem);
    expect(sanValues(leaf!)).toEqual(['api.example.test', 'web.example.test']);
    expect(inter!.subject).toContain('Keyward Intermediate CA');
    expect(opensslVerify(certPem)).toMatch(/leaf\.pem: OK/);
  });

  it('issues with dns-01', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'dns.example.test' }], 'dns-01');
    expect(sanValues(certs(certPem)[0]!)).toEqual(['dns.example.test']);
  });

  it('issues with tls-alpn-01', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const { certPem } = await issue(env, client, [{ type: 'dns', value: 'alpn.example.test' }], 'tls-alpn-01');
    expect(sanValues(certs(certPem)[0]!)).toEqual(['alpn.example.test']);
  });

  it('issues a wildcard with dns-01 only; the authorization is marked wildcard without "*."', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: '*.wild.example.test' }] });
    expect(order.identifiers).toEqual([{ type: 'dns', value: '*.wild.example.test' }]);
    const [authz] = await client.getAuthorizations(order);
    expect(authz!.wildcard).toBe(true);
    expect(authz!.identifier).toEqual({ type: 'dns', value: 'wild.example.test' });
    expect(authz!.challenges.map((c) => c.type)).toEqual(['dns-01']);
    const { certPem } = await issue(
      env,
      client,
      [
        { type: 'dns', value: '*.wild.example.test' },
        { type: 'dns', value: 'wild.example.test' },
      ],
      'http-01',
    );
    expect(sanValues(certs(certPem)[0]!)).toEqual(['*.wild.example.test', 'wild.example.test']);
  });

  it('issues for an IP identifier (RFC 8738) with an iPAddress SAN; no dns-01 offered', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const order = await client.createOrder({ identifiers: [{ type: 'ip', value: '127.0.0.1' }] });
    const [authz] = await client.getAuthorizations(order);
    expect(authz!.challenges.map((c) => c.type).sort()).toEqual(['http-01', 'tls-alpn-01']);
    const { certPem } = await issue(env, client, [{ type: 'ip', value: '127.0.0.1' }], 'http-01');
    expect(sanValues(certs(certPem)[0]!)).toEqual(['127.0.0.1']);
  });

  it('reuses a valid authorization for a new order of the same account', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    await issue(env, client, [{ type: 'dns', value: 'again.example.test' }], 'http-01');
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'again.example.test' }] });
    expect(order.status).toBe('ready');
  });

  it('fails a wrong http-01 response: challenge, authorization and order invalid with errors', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    env.dns.setA('wrong.example.test', '127.0.0.1');
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'wrong.example.test' }] });
    const [authz] = await client.getAuthorizations(order);
    const challenge = authz!.challenges.find((c) => c.type === 'http-01')!;
    env.http01.set((challenge as { token: string }).token, 'not-the-key-authorization');
    const started = await client.completeChallenge(challenge);
    expect(['processing', 'valid', 'invalid']).toContain(started.status);
    await expect(client.waitForValidStatus(challenge)).rejects.toThrow();
    const after = await client.getAuthorizations(order);
    expect(after[0]!.status).toBe('invalid');
    const failed = after[0]!.challenges.find((c) => c.type === 'http-01') as {
      status: string;
      error?: { type: string };
    };
    expect(failed.status).toBe('invalid');
    expect(failed.error?.type).toMatch(/^urn:ietf:params:acme:error:/);
    const o = await client.getOrder(order);
    expect(o.status).toBe('invalid');
    expect((o as { error?: { type: string } }).error?.type).toMatch(/^urn:ietf:params:acme:error:/);
  });

  it('refuses a name whose CAA record names another CA (caa error on challenge and order)', async () => {
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    env.dns.setA('caa.example.test', '127.0.0.1');
    env.dns.setCaa('caa.example.test', [{ flags: 0, tag: 'issue', value: 'other-ca.example' }]);
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'caa.example.test' }] });
    const [authz] = await client.getAuthorizations(order);
    const { publish } = await import('../support/acme.ts');
    const challenge = await publish(env, client, authz!, 'http-01');
    await client.completeChallenge(challenge);
    await expect(client.waitForValidStatus(challenge)).rejects.toThrow(/CAA/);
    const o = (await client.getOrder(order)) as acme.Order & { error?: { type: string } };
    expect([o.status, o.error?.type]).toEqual(['invalid', 'urn:ietf:params:acme:error:caa']);
  });
});

describe('CAA at finalize', () => {
  /** Validates `name` over http-01, then publishes `caa` for it: the order is ready when this returns. */
  async function readyOrder(on: AcmeTestEnv, name: string, caa: { flags: number; tag: string; value: string }[]) {
    const { publish } = await import('../support/acme.ts');
    const client = await on.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    on.dns.setA(name, '127.0.0.1');
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] });
    const [authz] = await client.getAuthorizations(order);
    const challenge = await publish(on, client, authz!, 'http-01');
    await client.completeChallenge(challenge);
    await client.waitForValidStatus(challenge);
    on.dns.setCaa(name, caa);
    const [, csr] = await acme.crypto.createCsr({ altNames: [name] }, await acme.crypto.createPrivateEcdsaKey());
    return { client, order, csr };
  }
  const forbidding = [{ flags: 0, tag: 'issue', value: 'other-ca.example' }];

  it('is not checked again for a name validated moments ago', async () => {
    const { client, order, csr } = await readyOrder(env, 'fresh-caa.example.test', forbidding);
    expect((await client.finalizeOrder(order, csr)).status).toBe('valid');
  });

  it('is checked again for a name validated longer ago than acme.caaRecheckAfter: caa error, order still ready', async () => {
    const strict = await startAcmeEnv({ acme: { caaRecheckAfter: '1s' } });
    try {
      const { client, order, csr } = await readyOrder(strict, 'stale-caa.example.test', forbidding);
      await new Promise((r) => setTimeout(r, 1_100)); // the validation is now older than the setting
      // acme-client keeps only the detail of a problem; its signed request shows the whole document.
      const http = (
        client as unknown as {
          http: {
            signedRequest(
              url: string,
              payload: unknown,
              o: { kid: string },
            ): Promise<{ status: number; data: Record<string, unknown> }>;
          };
        }
      ).http;
      const der = Buffer.from(csr.toString().replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64url');
      const res = await http.signedRequest(order.finalize, { csr: der }, { kid: client.getAccountUrl() });
      expect([res.status, res.data.type]).toEqual([403, 'urn:ietf:params:acme:error:caa']);
      expect(res.data.detail).toContain('stale-caa.example.test');
      expect(res.data.subproblems).toEqual([
        expect.objectContaining({
          type: 'urn:ietf:params:acme:error:caa',
          identifier: { type: 'dns', value: 'stale-caa.example.test' },
        }),
      ]);
      expect((await client.getOrder(order)).status).toBe('ready');
      // Once CAA names this CA again, the same order can be finalized.
      strict.dns.setCaa('stale-caa.example.test', [{ flags: 0, tag: 'issue', value: 'keyward.internal' }]);
      expect((await client.finalizeOrder(order, csr)).status).toBe('valid');
    } finally {
      await strict.close();
    }
  });
});
