import { createServer as createHttpServer, type Server } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

import * as acme from 'acme-client';
import { exportJWK, FlattenedSign, generateKeyPair, type JWK } from 'jose';

import type { Logger } from '../../src/core/log.ts';
import { freePort, startTestCa, type TestCa } from './ca.ts';
import type { TestStore } from './db.ts';
import { startTestDnsServer, type TestDnsServer } from './dns-server.ts';

/** Roots of every CA started in this test file; acme-client has one global axios instance. */
const trustedRoots: string[] = [];

function trust(rootPem: string): void {
  if (!trustedRoots.includes(rootPem)) trustedRoots.push(rootPem);
  acme.axios.defaults.httpsAgent = new https.Agent({ ca: trustedRoots, keepAlive: false });
}

export interface AcmeTestEnv {
  ca: TestCa;
  dns: TestDnsServer;
  directoryUrl: string;
  /** token → key authorization served by the http-01 responder */
  http01: Map<string, string>;
  /** SNI name → [key, cert] served with ALPN acme-tls/1 */
  tlsAlpn: Map<string, { key: Buffer; cert: Buffer }>;
  client(opts?: Partial<acme.ClientOptions>): Promise<acme.Client>;
  close(): Promise<void>;
}

function listen(server: Server | tls.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
}

/**
 * A serving CA with ACME, a test DNS server, an http-01 responder and a tls-alpn-01 responder, all
 * on loopback. `shared` reuses another env's DNS and responders (a second replica on one store).
 */
export async function startAcmeEnv(
  opts: {
    acme?: Record<string, unknown>;
    validation?: Record<string, unknown>;
    settings?: Record<string, unknown>;
    store?: TestStore;
    shared?: AcmeTestEnv;
    publicPort?: number;
    log?: Logger;
  } = {},
): Promise<AcmeTestEnv> {
  const dns = opts.shared?.dns ?? (await startTestDnsServer());
  const http01 = opts.shared?.http01 ?? new Map<string, string>();
  const tlsAlpn = opts.shared?.tlsAlpn ?? new Map<string, { key: Buffer; cert: Buffer }>();
  const servers: (Server | tls.Server)[] = [];
  let httpPort: number;
  let tlsPort: number;
  if (opts.shared) {
    httpPort = opts.shared.ca.config.validation.httpPort;
    tlsPort = opts.shared.ca.config.validation.tlsAlpnPort;
  } else {
    httpPort = await freePort();
    const httpServer = createHttpServer((req, res) => {
      const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1];
      const body = token === undefined ? undefined : http01.get(token);
      res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'text/plain' }).end(body ?? 'not found');
    });
    await listen(httpServer, httpPort);
    servers.push(httpServer);
    tlsPort = await freePort();
    const tlsServer = tls.createServer({
      ALPNProtocols: ['acme-tls/1'],
      SNICallback: (name, cb) => {
        const entry = tlsAlpn.get(name);
        cb(
          entry ? null : new Error(`no tls-alpn-01 certificate for ${name}`),
          entry ? tls.createSecureContext({ key: entry.key, cert: entry.cert }) : undefined,
        );
      },
    });
    tlsServer.on('tlsClientError', () => {});
    await listen(tlsServer, tlsPort);
    servers.push(tlsServer);
  }
  const ca = await startTestCa({
    ...(opts.store ? { store: opts.store } : {}),
    ...(opts.log ? { log: opts.log } : {}),
    settings: {
      ...opts.settings,
      ...(opts.publicPort !== undefined
        ? {
            https: {
              listen: `127.0.0.1:${await freePort()}`,
              hostnames: ['localhost', '127.0.0.1'],
              publicUrl: `https://localhost:${opts.publicPort}`,
            },
          }
        : {}),
      acme: { ...opts.acme },
      validation: {
        httpPort,
        tlsAlpnPort: tlsPort,
        dnsResolver: dns.address,
        timeout: '2s',
        retryFor: '1s',
        ...opts.validation,
      },
    },
  });
  trust(ca.rootPem);
  const directoryUrl = `${ca.httpsUrl}/acme/directory`;
  return {
    ca,
    dns,
    directoryUrl,
    http01,
    tlsAlpn,
    client: async (o = {}) =>
      new acme.Client({
        directoryUrl,
        accountKey: await acme.crypto.createPrivateEcdsaKey(),
        backoffAttempts: 30,
        backoffMin: 100,
        backoffMax: 500,
        ...o,
      }),
    close: async () => {
      await ca.close();
      if (!opts.shared) {
        for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
        await dns.close();
      }
    },
  };
}

export type ChallengeType = 'http-01' | 'dns-01' | 'tls-alpn-01';

/** Publishes the response to a challenge where our validator will look for it. */
export async function publish(
  env: AcmeTestEnv,
  client: acme.Client,
  authz: acme.Authorization,
  type: ChallengeType,
): Promise<acme.Authorization['challenges'][number]> {
  const challenge = authz.challenges.find((c) => c.type === type);
  if (!challenge)
    throw new Error(
      `no ${type} challenge for ${authz.identifier.value}: ${authz.challenges.map((c) => c.type).join(', ')}`,
    );
  const keyAuth = await client.getChallengeKeyAuthorization(challenge);
  const name = authz.identifier.value;
  if (type === 'http-01') env.http01.set((challenge as { token: string }).token, keyAuth);
  if (type === 'dns-01') {
    const owner = `_acme-challenge.${name}`;
    const values = [...(txtValues.get(owner) ?? []), keyAuth];
    txtValues.set(owner, values);
    env.dns.setTxt(owner, values);
  }
  if (type === 'tls-alpn-01') {
    const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuth);
    env.tlsAlpn.set(authz.identifier.type === 'ip' ? reverseName(name) : name, { key, cert });
  }
  return challenge;
}

const txtValues = new Map<string, string[]>();

function reverseName(ip: string): string {
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

/** Points names at loopback in the test DNS server. */
export function resolveToLoopback(env: AcmeTestEnv, ...names: string[]): void {
  for (const n of names) env.dns.setA(n.replace(/^\*\./, ''), '127.0.0.1');
}

export interface Issued {
  order: acme.Order;
  certPem: string;
  keyPem: Buffer;
}

/** The whole flow a client runs: order, prove control, finalize, download. */
export async function issue(
  env: AcmeTestEnv,
  client: acme.Client,
  identifiers: { type: 'dns' | 'ip'; value: string }[],
  type: ChallengeType,
  extra: Record<string, unknown> = {},
): Promise<Issued> {
  resolveToLoopback(env, ...identifiers.filter((i) => i.type === 'dns').map((i) => i.value));
  const order = await client.createOrder({ identifiers, ...extra });
  const authzs = await client.getAuthorizations(order);
  for (const authz of authzs) {
    if (authz.status === 'valid') continue;
    const challenge = await publish(env, client, authz, authz.wildcard ? 'dns-01' : type);
    await client.completeChallenge(challenge);
    await client.waitForValidStatus(challenge);
  }
  const keyPem = await acme.crypto.createPrivateEcdsaKey();
  const [, csr] = await acme.crypto.createCsr({ altNames: identifiers.map((i) => i.value) }, keyPem);
  const finalized = await client.finalizeOrder(order, csr);
  const certPem = await client.getCertificate(finalized);
  return { order: finalized, certPem, keyPem };
}

/** A hand-built ACME request, for the cases a well-behaved client never sends. */
export interface RawKey {
  privateKey: CryptoKey;
  jwk: JWK;
  alg: string;
}

export async function rawKey(alg: 'ES256' | 'RS256' | 'ES384' | 'EdDSA' = 'ES256'): Promise<RawKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { privateKey, jwk: await exportJWK(publicKey), alg };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Header lines as sent, e.g. to see that each Link has a line of its own. */
  rawHeaders: string[];
  body: string;
  json(): Record<string, unknown>;
}

export function request(
  env: AcmeTestEnv,
  method: string,
  url: string,
  opts: { headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: trustedRoots, headers: opts.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          json: () => JSON.parse(body) as Record<string, unknown>,
        });
      });
    });
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

export async function freshNonce(env: AcmeTestEnv): Promise<string> {
  const res = await request(env, 'HEAD', `${env.ca.httpsUrl}/acme/new-nonce`);
  return String(res.headers['replay-nonce']);
}

/** Signs and POSTs; header fields given override the defaults (alg, nonce, url, jwk/kid). */
export async function signedPost(
  env: AcmeTestEnv,
  url: string,
  key: RawKey,
  payload: unknown,
  header: Record<string, unknown> = {},
  opts: { contentType?: string } = {},
): Promise<RawResponse> {
  const body = await signJws(key, payload, {
    alg: key.alg,
    nonce: await freshNonce(env),
    url,
    jwk: key.jwk,
    ...header,
  });
  return request(env, 'POST', url, {
    headers: { 'content-type': opts.contentType ?? 'application/jose+json' },
    body: JSON.stringify(body),
  });
}

export async function signJws(
  key: RawKey,
  payload: unknown,
  header: Record<string, unknown>,
): Promise<{ protected: string; payload: string; signature: string }> {
  const clean = Object.fromEntries(Object.entries(header).filter(([, v]) => v !== undefined));
  const bytes = payload === '' ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(payload));
  const jws = await new FlattenedSign(bytes).setProtectedHeader(clean as { alg: string }).sign(key.privateKey);
  return { protected: jws.protected!, payload: jws.payload, signature: jws.signature };
}

export type AcmeJson = {
  type?: string;
  status?: string;
  certificate?: string;
  contact?: string[];
  orders?: string;
  detail?: string;
} & Record<string, unknown>;

/** acme-client internals the typings leave out: signed requests to any URL, and the account key. */
export interface ClientInternals {
  api: {
    apiRequest(
      url: string,
      payload: unknown,
      validStatusCodes?: number[],
    ): Promise<{ status: number; headers: Record<string, string | undefined>; data: AcmeJson }>;
  };
  opts: { accountKey: Buffer };
}

export function internals(client: acme.Client): ClientInternals {
  return client as unknown as ClientInternals;
}
