// A deliberately light ACME client for bench:acme: undici with keep-alive, ES256 JWS signed with
// node:crypto, CSRs written as DER by hand, one account per worker. acme-client costs more CPU per
// flow than the server should, so with it the benchmark would mostly measure itself.
import { createHash, generateKeyPairSync, type KeyObject, sign, X509Certificate } from 'node:crypto';

import { type Pool } from 'undici';

const b64u = (b: Uint8Array | string): string => Buffer.from(b).toString('base64url');

function der(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}
const seq = (...p: Uint8Array[]) => der(0x30, ...p);
// Pre-encoded OIDs: extensionRequest (1.2.840.113549.1.9.14), subjectAltName, ecdsa-with-SHA256.
const EXT_REQUEST = Buffer.from('06092a864886f70d01090e', 'hex');
const SAN = Buffer.from('0603551d11', 'hex');
const ECDSA_SHA256 = seq(Buffer.from('06082a8648ce3d040302', 'hex'));

/** PKCS#10 for one DNS name with an empty subject: one signature and a few copies per flow. */
export function buildCsr(key: KeyObject, spki: Uint8Array, name: string): Buffer {
  const san = seq(der(0x82, Buffer.from(name, 'ascii')));
  const attrs = der(0xa0, seq(EXT_REQUEST, der(0x31, seq(seq(SAN, der(0x04, san))))));
  const info = seq(Buffer.from([0x02, 0x01, 0x00]), seq(), spki, attrs);
  return seq(info, ECDSA_SHA256, der(0x03, Buffer.from([0]), sign('sha256', info, key)));
}

export interface Counters {
  requests: number;
  nonceFetches: number;
  badNonces: number;
  polls: number;
}

export interface Directory {
  newNonce: string;
  newAccount: string;
  newOrder: string;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const header = (a: Answer, name: string): string | undefined => {
  const v = a.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** The root and intermediates seen so far, each verified once. */
export class ChainChecker {
  private readonly trusted = new Map<string, X509Certificate>();
  constructor(private readonly root: X509Certificate) {}

  /** The leaf must carry exactly `name` and chain to the root through the PEMs that follow it. */
  check(pem: string, name: string, spki: Buffer): void {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g) ?? [];
    if (blocks.length < 2 || blocks.join('') !== pem) throw new Error('the chain is not leaf + issuer PEM');
    const leaf = new X509Certificate(blocks[0]!);
    if (leaf.subjectAltName !== `DNS:${name}`) throw new Error(`leaf SAN is ${leaf.subjectAltName}, not ${name}`);
    if (!Buffer.from(leaf.publicKey.export({ type: 'spki', format: 'der' })).equals(spki))
      throw new Error('leaf key is not the CSR key');
    const issuer = this.issuer(blocks[1]!);
    if (!leaf.checkIssued(issuer) || !leaf.verify(issuer.publicKey)) throw new Error('leaf not signed by its issuer');
  }

  private issuer(pem: string): X509Certificate {
    let cert = this.trusted.get(pem);
    if (!cert) {
      cert = new X509Certificate(pem);
      if (!cert.checkIssued(this.root) || !cert.verify(this.root.publicKey)) throw new Error('issuer not under root');
      this.trusted.set(pem, cert);
    }
    return cert;
  }
}

/** One worker: an ES256 account, a CSR key, and the nonce from the last answer. */
export class BenchClient {
  private readonly accountKey: KeyObject;
  private readonly jwk: Record<string, string>;
  readonly thumbprint: string;
  private readonly csrKey: KeyObject;
  private readonly csrSpki: Buffer;
  private kid: string | undefined;
  private nonce: string | undefined;
  private flows = 0;

  constructor(
    private readonly pool: Pool,
    private readonly dir: Directory,
    private readonly index: number,
    private readonly zone: string,
    private readonly counters: Counters,
  ) {
    const account = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    this.accountKey = account.privateKey;
    const { crv, kty, x, y } = account.publicKey.export({ format: 'jwk' }) as Record<string, string>;
    this.jwk = { crv: crv!, kty: kty!, x: x!, y: y! };
    this.thumbprint = b64u(createHash('sha256').update(JSON.stringify(this.jwk)).digest());
    const csr = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    this.csrKey = csr.privateKey;
    this.csrSpki = csr.publicKey.export({ type: 'spki', format: 'der' });
  }

  private async send(method: 'GET' | 'HEAD' | 'POST', url: string, body?: string): Promise<Answer> {
    this.counters.requests++;
    const u = new URL(url);
    const res = await this.pool.request({
      method,
      path: u.pathname,
      headers: body === undefined ? {} : { 'content-type': 'application/jose+json' },
      ...(body === undefined ? {} : { body }),
    });
    const text = await res.body.text();
    const answer = { status: res.statusCode, headers: res.headers as Answer['headers'], body: text };
    const nonce = header(answer, 'replay-nonce');
    if (nonce) this.nonce = nonce;
    return answer;
  }

  /** A JWS POST; `payload` undefined is POST-as-GET. A badNonce is retried with the fresh nonce. */
  async post(url: string, payload?: unknown): Promise<Answer> {
    for (let attempt = 0; ; attempt++) {
      if (!this.nonce) {
        this.counters.nonceFetches++;
        await this.send('GET', this.dir.newNonce);
      }
      const protectedHeader = b64u(
        JSON.stringify({
          alg: 'ES256',
          ...(this.kid ? { kid: this.kid } : { jwk: this.jwk }),
          nonce: this.nonce,
          url,
        }),
      );
      this.nonce = undefined;
      const body = payload === undefined ? '' : b64u(JSON.stringify(payload));
      const signature = sign('sha256', Buffer.from(`${protectedHeader}.${body}`), {
        key: this.accountKey,
        dsaEncoding: 'ieee-p1363',
      });
      const answer = await this.send(
        'POST',
        url,
        JSON.stringify({ protected: protectedHeader, payload: body, signature: b64u(signature) }),
      );
      if (answer.status === 400 && answer.body.includes('badNonce') && attempt < 10) {
        this.counters.badNonces++;
        continue;
      }
      if (answer.status >= 400) throw new Error(`${url} answered ${answer.status}: ${answer.body.slice(0, 300)}`);
      return answer;
    }
  }

  async register(): Promise<void> {
    const res = await this.post(this.dir.newAccount, { termsOfServiceAgreed: true });
    this.kid = header(res, 'location');
  }

  /** Polls `url` (POST-as-GET) until its status is `want`; anything final and different is an error. */
  private async pollUntil(url: string, want: string): Promise<Record<string, unknown>> {
    for (let wait = 5; ; wait = Math.min(50, wait * 2)) {
      await new Promise((r) => setTimeout(r, wait));
      this.counters.polls++;
      const body = JSON.parse((await this.post(url)).body) as Record<string, unknown>;
      if (body.status === want) return body;
      if (body.status === 'invalid') throw new Error(`${url} is invalid: ${JSON.stringify(body.error ?? body)}`);
    }
  }

  /**
   * newOrder → authz → challenge → finalize → download, then the certificate is checked. `steps`
   * below 5 stops after that many, so CPU per step shows as differences between runs.
   */
  async flow(checker: ChainChecker, steps = 5): Promise<void> {
    const name = `w${this.index}-${++this.flows}.${this.zone}`;
    const created = await this.post(this.dir.newOrder, { identifiers: [{ type: 'dns', value: name }] });
    const orderUrl = header(created, 'location')!;
    const order = JSON.parse(created.body) as { authorizations: string[]; finalize: string };
    const authzUrl = order.authorizations[0]!;
    if (steps < 2) return;
    const authz = JSON.parse((await this.post(authzUrl)).body) as { challenges: { type: string; url: string }[] };
    const challenge = authz.challenges.find((c) => c.type === 'http-01');
    if (!challenge) throw new Error('no http-01 challenge offered');
    if (steps < 3) return;
    const answered = JSON.parse((await this.post(challenge.url, {})).body) as { status: string };
    if (answered.status !== 'valid') await this.pollUntil(authzUrl, 'valid');
    if (steps < 4) return;
    const csr = b64u(buildCsr(this.csrKey, this.csrSpki, name));
    let finalized = JSON.parse((await this.post(order.finalize, { csr })).body) as Record<string, unknown>;
    if (finalized.status !== 'valid') finalized = await this.pollUntil(orderUrl, 'valid');
    if (steps < 5) return;
    const pem = (await this.post(finalized.certificate as string)).body;
    checker.check(pem, name, this.csrSpki);
  }
}

export async function directory(pool: Pool, path: string): Promise<Directory> {
  const res = await pool.request({ method: 'GET', path });
  return (await res.body.json()) as Directory;
}
