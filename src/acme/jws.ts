import { constants, createPublicKey, type KeyObject, verify } from 'node:crypto';

import type { Context } from 'hono';
import { calculateJwkThumbprint, type JWK } from 'jose';

import { nodeIncoming, readBodyText } from '../core/body.ts';
import { KeywardError } from '../core/errors.ts';
import type { Gathered } from '../issuance/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeDeps } from './deps.ts';
import { B64URL, decodeB64url } from './ids.ts';
import type { ReadAlong } from './read-along.ts';
import type { OrderCertificate } from './recent-certificates.ts';
import type { AuthzRow, OrderRow } from './views.ts';

/** The fixed text acme.sh looks for before it retries (it ignores the type). */
const BAD_NONCE_DETAIL = 'JWS has an invalid anti-replay nonce';

export const JWS_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'PS256', 'EdDSA'] as const;
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

const EC_CURVE: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };
const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 8192;

export interface FlattenedJws {
  protected: string;
  payload: string;
  signature: string;
}

export interface ProtectedHeader {
  alg: JwsAlgorithm;
  url: string;
  nonce?: string;
  kid?: string;
  jwk?: JWK;
  [k: string]: unknown;
}

export interface VerifiedJws {
  header: ProtectedHeader;
  /** undefined for POST-as-GET (an empty payload). */
  payload: Record<string, unknown> | undefined;
  jwk: JWK;
  thumbprint: string;
}

export interface VerifiedRequest extends VerifiedJws {
  /** Set when the JWS named an account by kid. */
  account: AccountRow | undefined;
  /** What `verifyRequest` was asked to read along, if it exists; its owner is not checked. */
  authz?: AuthzRow | undefined;
  order?: OrderRow | undefined;
  certificate?: OrderCertificate | undefined;
  gathered?: Required<Gathered>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Structure of a flattened JWS (RFC 7515 §7.2.2) with the restrictions of RFC 8555 §6.2. */
export function parseFlattened(value: unknown): FlattenedJws {
  if (!isRecord(value))
    throw new KeywardError('malformed', 'Request body must be a JWS in flattened JSON serialization');
  if ('signatures' in value)
    throw new KeywardError('malformed', 'JWS general serialization is not accepted; use flattened JSON');
  if ('header' in value) throw new KeywardError('malformed', 'JWS unprotected header is not accepted');
  const { protected: p, payload, signature } = value;
  if (typeof p !== 'string' || typeof payload !== 'string' || typeof signature !== 'string') {
    throw new KeywardError('malformed', 'JWS must have string "protected", "payload" and "signature" members');
  }
  for (const [name, part] of [
    ['protected', p],
    ['payload', payload],
    ['signature', signature],
  ] as const) {
    if (!B64URL.test(part)) throw new KeywardError('malformed', `JWS ${name} is not unpadded base64url`);
  }
  return { protected: p, payload, signature };
}

export function decodeProtected(jws: FlattenedJws): Record<string, unknown> {
  const raw = decodeB64url(jws.protected);
  let header: unknown;
  try {
    header = raw ? JSON.parse(raw.toString('utf8')) : undefined;
  } catch {
    header = undefined;
  }
  if (!isRecord(header)) throw new KeywardError('malformed', 'JWS protected header is not a JSON object');
  if ('b64' in header || 'crit' in header)
    throw new KeywardError('malformed', 'JWS "b64" and "crit" header parameters are not accepted');
  return header;
}

export function checkAlgorithm(alg: unknown): JwsAlgorithm {
  if (typeof alg === 'string' && (JWS_ALGORITHMS as readonly string[]).includes(alg)) return alg as JwsAlgorithm;
  throw new KeywardError(
    'badSignatureAlgorithm',
    `JWS algorithm ${JSON.stringify(alg)} is not supported; use one of ${JWS_ALGORITHMS.join(', ')}`,
    { extra: { algorithms: [...JWS_ALGORITHMS] } },
  );
}

/** Only the public members, so what we store and compare is the key and nothing else. */
export function publicJwk(value: unknown): JWK {
  if (!isRecord(value) || typeof value.kty !== 'string')
    throw new KeywardError('malformed', '"jwk" must be a JSON Web Key');
  if ('d' in value || 'p' in value || 'k' in value) throw new KeywardError('badPublicKey', 'JWK must be a public key');
  const out: JWK = { kty: value.kty };
  for (const m of ['crv', 'x', 'y', 'n', 'e'] as const) {
    const v = value[m];
    if (v !== undefined) {
      if (typeof v !== 'string' || !B64URL.test(v) || (m !== 'crv' && v.length === 0))
        throw new KeywardError('badPublicKey', `JWK member "${m}" is invalid`);
      out[m] = v;
    }
  }
  return out;
}

function checkKeyForAlg(jwk: JWK, alg: JwsAlgorithm): void {
  const bad = (detail: string) => new KeywardError('badPublicKey', detail);
  if (alg.startsWith('ES')) {
    if (jwk.kty !== 'EC' || jwk.crv !== EC_CURVE[alg]) throw bad(`${alg} needs an EC key on ${EC_CURVE[alg]}`);
  } else if (alg === 'EdDSA') {
    if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') throw bad('EdDSA needs an Ed25519 key');
  } else {
    if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e) throw bad(`${alg} needs an RSA key`);
    const n = Buffer.from(jwk.n, 'base64url');
    let bits = n.length * 8;
    for (let i = 0; i < n.length && n[i] === 0; i++) bits -= 8;
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)
      throw bad(`RSA keys must have ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits`);
  }
}

// Importing a key costs more than verifying with it (OpenSSL 3 key decoding), and an account signs
// every request with the same key: keep recent imports. Public keys only, bounded.
const KEY_CACHE_SIZE = 2048;
const keyCache = new Map<string, KeyObject>();

function importCached(jwk: JWK): KeyObject {
  const id = `${jwk.kty} ${jwk.crv ?? ''} ${jwk.x ?? ''} ${jwk.y ?? ''} ${jwk.n ?? ''} ${jwk.e ?? ''}`;
  let key = keyCache.get(id);
  if (key === undefined) {
    key = createPublicKey({
      key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, n: jwk.n, e: jwk.e },
      format: 'jwk',
    });
    if (keyCache.size >= KEY_CACHE_SIZE) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(id, key);
  }
  return key;
}

const spkiCache = new WeakMap<KeyObject, Buffer>();

/** The account key's SubjectPublicKeyInfo DER, exported once per cached key. */
export function accountSpki(jwk: JWK): Buffer {
  const key = importCached(jwk);
  let spki = spkiCache.get(key);
  if (spki === undefined) {
    spki = key.export({ type: 'spki', format: 'der' });
    spkiCache.set(key, spki);
  }
  return spki;
}

/** ECDSA signatures in a JWS are r ‖ s, each as long as the curve's order (RFC 7518 §3.4). */
const EC_SIGNATURE_BYTES: Record<string, number> = { ES256: 64, ES384: 96, ES512: 132 };

/**
 * RFC 7515 §5.2 with node:crypto, synchronously: WebCrypto (what jose uses) hops through the
 * thread pool for every verify, which costs more than the verify itself on this hot path.
 */
function verifyJws(jws: FlattenedJws, alg: JwsAlgorithm, key: KeyObject): boolean {
  const data = Buffer.from(`${jws.protected}.${jws.payload}`, 'ascii');
  const sig = Buffer.from(jws.signature, 'base64url');
  switch (alg) {
    case 'ES256':
    case 'ES384':
    case 'ES512':
      return (
        sig.length === EC_SIGNATURE_BYTES[alg] &&
        verify(`sha${alg.slice(2)}`, data, { key, dsaEncoding: 'ieee-p1363' }, sig)
      );
    case 'RS256':
      return verify('sha256', data, key, sig);
    case 'PS256':
      return verify('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig);
    case 'EdDSA':
      return verify(null, data, key, sig);
  }
}

/** Verifies the signature of a JWS with the key it names or with the given one. */
export async function verifySignature(
  jws: FlattenedJws,
  alg: JwsAlgorithm,
  jwk: JWK,
): Promise<Record<string, unknown> | undefined> {
  checkKeyForAlg(jwk, alg);
  let key: KeyObject;
  try {
    key = importCached(jwk);
  } catch {
    throw new KeywardError('badPublicKey', 'JWK could not be imported');
  }
  let valid: boolean;
  try {
    valid = verifyJws(jws, alg, key);
  } catch (err) {
    throw new KeywardError('malformed', `JWS could not be verified: ${(err as Error).message}`);
  }
  if (!valid) throw new KeywardError('malformed', 'JWS signature is invalid');
  if (jws.payload.length === 0) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(jws.payload, 'base64url').toString('utf8'));
  } catch {
    throw new KeywardError('malformed', 'JWS payload is not JSON');
  }
  if (!isRecord(payload)) throw new KeywardError('malformed', 'JWS payload must be a JSON object');
  return payload;
}

/** The URL the client must have signed: our public base plus the path (and query) it asked for. */
export function expectedUrl(c: Context, deps: AcmeDeps): string {
  const u = new URL(c.req.url);
  return deps.urls.base + u.pathname + u.search;
}

async function readBody(c: Context, max: number): Promise<unknown> {
  const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/jose+json') {
    throw new KeywardError('unsupportedMediaType', 'Content-Type must be application/jose+json');
  }
  const text = await readBodyText(c.req.raw, max, 'Request body', nodeIncoming(c.env));
  try {
    return JSON.parse(text);
  } catch {
    throw new KeywardError('malformed', 'Request body is not JSON');
  }
}

export type KeyMode = 'kid' | 'jwk' | 'either';

/**
 * Authenticates an ACME POST (RFC 8555 §6.2–6.5): structure, algorithm, key, signature, url,
 * nonce, then the account's status for kid requests. `readAlong`: the authorization, order or
 * certificate the request is about, read in the nonce's round trip (a POST-as-GET then costs one
 * statement).
 */
export async function verifyRequest(
  c: Context,
  deps: AcmeDeps,
  mode: KeyMode,
  readAlong: ReadAlong = {},
): Promise<VerifiedRequest> {
  const jws = parseFlattened(await readBody(c, deps.config.acme.maxRequestBytes));
  const header = decodeProtected(jws);
  const alg = checkAlgorithm(header.alg);
  if (typeof header.url !== 'string') throw new KeywardError('malformed', 'JWS protected header must contain "url"');
  if (header.nonce === undefined) throw new KeywardError('badNonce', `${BAD_NONCE_DETAIL}: the JWS has no nonce`);
  if (typeof header.nonce !== 'string')
    throw new KeywardError('badNonce', `${BAD_NONCE_DETAIL}: the nonce is not a string`);
  const hasJwk = header.jwk !== undefined;
  const hasKid = header.kid !== undefined;
  if (hasJwk === hasKid)
    throw new KeywardError('malformed', 'JWS protected header must contain exactly one of "jwk" and "kid"');
  if (mode === 'kid' && hasJwk)
    throw new KeywardError('malformed', 'This resource requires a "kid" (the account URL), not a "jwk"');
  if (mode === 'jwk' && hasKid) throw new KeywardError('malformed', 'This resource requires a "jwk", not a "kid"');

  if (hasKid && typeof header.kid !== 'string') throw new KeywardError('malformed', '"kid" must be a string');
  const accountId = hasKid ? deps.urls.accountId(header.kid as string) : undefined;
  // One round trip spends the nonce and loads the account; a request that then fails a check has
  // still used its nonce, as it would have on any other error.
  const { fresh, account, authz, order, certificate, gathered } = await deps.nonces.consume(
    header.nonce,
    accountId,
    readAlong,
  );
  let jwk: JWK;
  if (hasKid) {
    if (!account)
      throw new KeywardError(
        'accountDoesNotExist',
        `No account at ${JSON.stringify(header.kid)}; "kid" must be the account URL`,
      );
    jwk = account.jwk as JWK;
  } else {
    jwk = publicJwk(header.jwk);
  }
  const payload = await verifySignature(jws, alg, jwk);

  if (header.url !== expectedUrl(c, deps)) {
    throw new KeywardError(
      'unauthorized',
      `JWS "url" ${JSON.stringify(header.url)} does not match the request URL ${expectedUrl(c, deps)}`,
    );
  }
  if (!fresh) {
    throw new KeywardError('badNonce', `${BAD_NONCE_DETAIL}: it is unknown, expired or already used`);
  }
  if (account && account.status !== 'valid') throw new KeywardError('unauthorized', `Account is ${account.status}`);
  // The account row keeps its key's thumbprint; only jwk requests need it computed.
  const thumbprint = account ? account.key_thumbprint : await calculateJwkThumbprint(jwk, 'sha256');
  return {
    header: { ...header, alg, url: header.url } as ProtectedHeader,
    payload,
    jwk,
    thumbprint,
    account,
    authz,
    order,
    certificate,
    ...(gathered ? { gathered } : {}),
  };
}

/** For endpoints that only accept kid requests. */
export function requireAccount(req: Pick<VerifiedRequest, 'account'>): AccountRow {
  if (!req.account) throw new KeywardError('malformed', 'This resource requires a "kid"');
  return req.account;
}
