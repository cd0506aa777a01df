import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

import { combine, split } from 'shamir-secret-sharing';

import { KmsError } from '../errors.ts';
import { assertKcv, keyCheckValue, symmetricRoot } from './symmetric.ts';
import type { RootOfTrust, RootRecord } from './types.ts';

// M-of-N root of trust: the 256-bit root key exists only while M share holders have entered their
// shares into a running process. It is split with Shamir's scheme over GF(256) (the audited
// shamir-secret-sharing package; the same field and tables as Vault's unseal keys). The database
// keeps the share set's id, M, N and one digest per share, so a wrong, mistyped or altered share is
// refused by name before any combining, and the root's key check value, so a combination that
// does not give the root key is refused too.

/** What kms_roots.params holds for a shares root. Nothing here helps to rebuild the key. */
export interface ShareSetParams {
  /** Changes with every rekey-shares: shares of an older set are refused. */
  setId: string;
  threshold: number;
  count: number;
  /** SHA-256 per share (index 1 first), over the set id, the index and the share's bytes. */
  digests: string[];
  createdAt: string;
}

export interface ShareSet {
  params: ShareSetParams;
  /** The N shares as text, share 1 first: shown once, or written to files, never stored. */
  shares: string[];
}

const PREFIX = 'keyward-share';
const VERSION = '1';
const MAX_SHARES = 32;

function shareDigest(setId: string, index: number, bytes: Uint8Array): string {
  return createHash('sha256').update(`keyward-share-v1\0${setId}\0${index}\0`).update(bytes).digest('hex');
}

function checksum(body: string): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 8);
}

/** `keyward-share:1:<set>:<i>/<n>:<m>:<base64url share>:<checksum>`: one line a holder can keep. */
function encodeShare(setId: string, index: number, count: number, threshold: number, bytes: Uint8Array): string {
  const body = `${PREFIX}:${VERSION}:${setId}:${index}/${count}:${threshold}:${Buffer.from(bytes).toString('base64url')}`;
  return `${body}:${checksum(body)}`;
}

export interface ParsedShare {
  setId: string;
  index: number;
  count: number;
  threshold: number;
  bytes: Uint8Array;
}

/** Reads a share's text, refusing one that is malformed or whose checksum shows it was mistyped. */
export function parseShare(text: string): ParsedShare {
  const trimmed = text.trim();
  const m = /^keyward-share:(\d+):([0-9a-f]{16}):(\d{1,3})\/(\d{1,3}):(\d{1,3}):([A-Za-z0-9_-]+):([0-9a-f]{8})$/.exec(
    trimmed,
  );
  if (!m)
    throw new KmsError(
      'InvalidShare',
      'this is not a Keyward share (expected one line: keyward-share:1:SET:I/N:M:DATA:CHECK)',
    );
  const [, version, setId, i, n, t, data, check] = m;
  const index = Number(i);
  const count = Number(n);
  const name = `share ${index} of ${count}`;
  if (version !== VERSION) throw new KmsError('InvalidShare', `${name} has format version ${version}, not ${VERSION}`);
  if (checksum(trimmed.slice(0, trimmed.lastIndexOf(':'))) !== check)
    throw new KmsError(
      'InvalidShare',
      `${name} is corrupt: its checksum does not match (a typo or a damaged copy); ask its holder for it again`,
    );
  return { setId: setId!, index, count, threshold: Number(t), bytes: new Uint8Array(Buffer.from(data!, 'base64url')) };
}

/** Splits a root key into a new share set of `count` shares, any `threshold` of which rebuild it. */
export async function splitRootKey(rootKey: Uint8Array, threshold: number, count: number): Promise<ShareSet> {
  if (
    !Number.isInteger(threshold) ||
    !Number.isInteger(count) ||
    threshold < 2 ||
    count < threshold ||
    count > MAX_SHARES
  )
    throw new KmsError(
      'InvalidInput',
      `a share set needs 2 ≤ threshold ≤ shares ≤ ${MAX_SHARES} (got ${threshold} of ${count})`,
    );
  const setId = randomBytes(8).toString('hex');
  const parts = await split(new Uint8Array(rootKey), count, threshold);
  const shares = parts.map((bytes, i) => encodeShare(setId, i + 1, count, threshold, bytes));
  const digests = parts.map((bytes, i) => shareDigest(setId, i + 1, bytes));
  for (const p of parts) p.fill(0);
  return { params: { setId, threshold, count, digests, createdAt: new Date().toISOString() }, shares };
}

/**
 * Checks one share against the current set: set id, index, M and N, and the digest the set
 * recorded for that index. Every refusal names the share.
 */
export function checkShare(params: ShareSetParams, share: ParsedShare): void {
  const name = `share ${share.index} of ${share.count}`;
  if (share.setId !== params.setId)
    throw new KmsError(
      'InvalidShare',
      `${name} belongs to share set ${share.setId}, not the current set ${params.setId} (replaced by rekey-shares on ${params.createdAt})`,
    );
  if (
    share.count !== params.count ||
    share.threshold !== params.threshold ||
    share.index < 1 ||
    share.index > params.count
  )
    throw new KmsError(
      'InvalidShare',
      `${name} (${share.threshold} needed) does not fit set ${params.setId}: ${params.threshold} of ${params.count}`,
    );
  const expected = Buffer.from(params.digests[share.index - 1] ?? '', 'hex');
  const actual = Buffer.from(shareDigest(params.setId, share.index, share.bytes), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual))
    throw new KmsError('InvalidShare', `${name} is not the share issued for set ${params.setId} (altered or corrupt)`);
}

/** Rebuilds the root key from checked shares and proves it against the root's key check value. */
export async function combineShares(record: RootRecord, shares: ParsedShare[]): Promise<Buffer> {
  const key = Buffer.from(await combine(shares.map((s) => s.bytes)));
  assertKcv(key, record.kcv, `the shares do not rebuild root ${record.id} (its key check value does not match)`);
  return key;
}

/** A new shares root: a random 256-bit key, split at once; the key is dropped after use. */
export async function createSharesRoot(
  id: string,
  threshold: number,
  count: number,
): Promise<{ root: RootOfTrust; record: RootRecord; shares: string[] }> {
  const key = randomBytes(32);
  const set = await splitRootKey(key, threshold, count);
  const record: RootRecord = { id, provider: 'shares', params: { ...set.params }, kcv: keyCheckValue(key) };
  return { root: symmetricRoot(id, 'shares', key), record, shares: set.shares };
}

export function shareSetOf(record: Pick<RootRecord, 'params'>): ShareSetParams {
  return record.params as unknown as ShareSetParams;
}
