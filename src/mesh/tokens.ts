import { randomBytes } from 'node:crypto';

import { errors as joseErrors, importJWK, jwtVerify } from 'jose';

import { normalizeSans } from '../ca/names.ts';
import { ADMIN_PROFILE, type Config } from '../config/load.ts';
import { KeywardError } from '../core/errors.ts';
import { identifiersOf, type SanSet } from '../core/identifiers.ts';
import type { Db, Executor } from '../db/schema.ts';
import type { Issuance } from '../issuance/index.ts';
import type { KeyHierarchy } from '../kms/index.ts';
import { ensureProvisioner, findProvisioner, signJwt } from './provisioner.ts';

export const TOKEN_ISSUER = 'keyward';

/** The audience of every bootstrap token: the sign endpoint's public URL. */
export function signUrl(config: Pick<Config, 'httpsBaseUrl'>): string {
  return `${config.httpsBaseUrl}/v1/sign`;
}

export interface TokenRequest {
  /** SPIFFE ID (or any URI) the token authorizes. */
  id?: string;
  dns?: string[];
  ip?: string[];
  ttlMs?: number;
  profile?: string;
  principal: string;
  /** Injected clock (tests); default now. */
  now?: Date;
}

export interface CreatedToken {
  token: string;
  jti: string;
  audience: string;
  sans: SanSet;
  profile: string;
  expiresAt: string;
}

export interface TokenDeps {
  config: Config;
  db: Db;
  kms: KeyHierarchy;
  /** The profiles a token may name, and the name policy the certificate will be decided by. */
  issuance: Pick<Issuance, 'profiles' | 'checkNames'>;
}

/**
 * Mints a one-time bootstrap token. The names are checked now by the decision /v1/sign will make
 * (global rules and those of the issuer that signs the profile), so a refusal names its rule at
 * creation (and again at use: rules may change in between). The token is recorded so that its
 * single use can be enforced by a conditional update.
 */
export async function createBootstrapToken(deps: TokenDeps, req: TokenRequest): Promise<CreatedToken> {
  const { config, db } = deps;
  const sans = normalizeSans({ dns: req.dns ?? [], ip: req.ip ?? [], uri: req.id ? [req.id] : [], email: [] });
  if (sans.dns.length + sans.ip.length + sans.uri.length === 0)
    throw new KeywardError('malformed', 'a token must name at least one identity (--id, --dns or --ip)');
  const profileName = req.profile ?? config.mesh.defaultProfile;
  // Admin certificates make administrators: never through a bootstrap token.
  const profiles = deps.issuance.profiles;
  const profile = profileName === ADMIN_PROFILE ? undefined : profiles.get(profileName);
  if (!profile)
    throw new KeywardError(
      'invalidProfile',
      `unknown profile "${profileName}" (known: ${[...profiles.keys()].filter((p) => p !== ADMIN_PROFILE).join(', ')})`,
    );
  const ttl = req.ttlMs ?? config.mesh.tokenTtl;
  if (ttl <= 0 || ttl > config.mesh.maxTokenTtl)
    throw new KeywardError(
      'malformed',
      `the token lifetime must be between 1s and mesh.maxTokenTtl (${config.mesh.maxTokenTtl / 1000}s)`,
    );
  const jti = randomBytes(16).toString('base64url');
  await deps.issuance.checkNames({ kind: 'mesh-token', jti }, identifiersOf(sans), profileName);

  const provisioner = await ensureProvisioner(db, deps.kms, req.principal);
  const now = req.now ?? new Date();
  const iat = Math.floor(now.getTime() / 1000);
  const exp = iat + Math.ceil(ttl / 1000);
  const audience = signUrl(config);
  const claims = {
    iss: TOKEN_ISSUER,
    sub: sans.uri[0] ?? sans.dns[0] ?? sans.ip[0],
    aud: audience,
    iat,
    nbf: iat,
    exp,
    jti,
    sans,
    profile: profileName,
  };
  await db
    .insertInto('mesh_tokens')
    .values({
      jti,
      kid: provisioner.kid,
      names: JSON.stringify(sans),
      profile: profileName,
      expires_at: new Date(exp * 1000),
      created_by: req.principal,
    })
    .execute();
  const token = await signJwt(deps.kms, provisioner, claims, req.principal);
  return { token, jti, audience, sans, profile: profileName, expiresAt: new Date(exp * 1000).toISOString() };
}

export interface VerifiedToken {
  jti: string;
  sans: SanSet;
  profile: string;
}

/**
 * Signature, issuer, audience, expiry and shape; single use is checked by consumeToken. 30 s of
 * tolerance absorbs skew between the host that minted the token and this one (nbf); expiry is
 * enforced exactly again by consumeToken against the recorded expires_at.
 */
export async function verifyBootstrapToken(
  db: Db,
  token: string,
  opts: { audience: string; now: Date },
): Promise<VerifiedToken> {
  const provisioner = await findProvisioner(db);
  if (!provisioner) throw new KeywardError('unauthenticated', 'no bootstrap token was ever issued by this CA');
  const key = await importJWK({ ...provisioner.publicJwk, alg: 'ES256' }, 'ES256');
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['ES256'],
      issuer: TOKEN_ISSUER,
      audience: opts.audience,
      currentDate: opts.now,
      requiredClaims: ['exp', 'jti'],
      clockTolerance: 30,
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired)
      throw new KeywardError('unauthenticated', 'the bootstrap token has expired');
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud')
      throw new KeywardError(
        'unauthenticated',
        `the bootstrap token is for another audience (this endpoint is ${opts.audience})`,
      );
    if (err instanceof joseErrors.JOSEError)
      throw new KeywardError('unauthenticated', `the bootstrap token is not valid: ${err.message}`);
    throw err;
  }
  const sans = payload.sans as SanSet | undefined;
  const ok = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    !sans ||
    !ok(sans.dns) ||
    !ok(sans.ip) ||
    !ok(sans.uri) ||
    !ok(sans.email) ||
    typeof payload.profile !== 'string' ||
    typeof payload.jti !== 'string'
  ) {
    throw new KeywardError('unauthenticated', 'the bootstrap token lacks its names or profile');
  }
  return { jti: payload.jti, sans, profile: payload.profile };
}

/**
 * Marks the token used. One conditional UPDATE, so two replicas racing on the same token cannot
 * both win. Called after every other check passed, so a refused CSR does not burn the token.
 */
/** Why a token can't be spent: unknown, used (and when) or expired. */
async function spentTokenError(db: Executor, jti: string, now: Date): Promise<KeywardError | undefined> {
  const known = await db
    .selectFrom('mesh_tokens')
    .select(['used_at', 'expires_at'])
    .where('jti', '=', jti)
    .executeTakeFirst();
  if (!known) return new KeywardError('unauthenticated', 'the bootstrap token is unknown to this CA');
  if (known.used_at)
    return new KeywardError(
      'unauthenticated',
      `the bootstrap token was already used (at ${known.used_at.toISOString()}); tokens are single-use`,
    );
  if (known.expires_at <= now) return new KeywardError('unauthenticated', 'the bootstrap token has expired');
  return undefined;
}

/** Refuses a token that could not be spent now, without spending it (reads only). */
export async function consumableToken(db: Executor, jti: string, now: Date): Promise<void> {
  const error = await spentTokenError(db, jti, now);
  if (error) throw error;
}

/**
 * Spends the token: one conditional update, so of two concurrent uses exactly one wins. Run in the
 * transaction that reserves the certificate's serial (src/mesh/service.ts).
 */
export async function consumeToken(db: Executor, jti: string, now: Date): Promise<void> {
  const row = await db
    .updateTable('mesh_tokens')
    .set({ used_at: now })
    .where('jti', '=', jti)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .returning('jti')
    .executeTakeFirst();
  if (row) return;
  throw (
    (await spentTokenError(db, jti, now)) ??
    new KeywardError('unauthenticated', 'the bootstrap token could not be spent')
  );
}

/** Gives a spent token back when its certificate was not signed after all. */
export async function returnToken(db: Executor, jti: string): Promise<void> {
  await db
    .updateTable('mesh_tokens')
    .set({ used_at: null })
    .where('jti', '=', jti)
    .where('used_serial', 'is', null)
    .execute();
}

export async function recordTokenSerial(db: Executor, jti: string, serial: string): Promise<void> {
  await db.updateTable('mesh_tokens').set({ used_serial: serial }).where('jti', '=', jti).execute();
}
