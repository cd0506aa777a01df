import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import type * as Pkcs11Types from 'pkcs11js';

import {
  aadOf,
  ALG_PKCS11_GCM,
  checkExpected,
  encodeHeader,
  KWE1_HEADER_LEN,
  parseHeader,
  PURPOSE,
} from '../container.ts';
import { KmsError } from '../errors.ts';
import { kekContext } from './symmetric.ts';
import type { RootOfTrust, RootRecord } from './types.ts';

// Root of trust in a PKCS#11 token: an AES-256 key that never leaves it (CKA_EXTRACTABLE false,
// CKA_SENSITIVE true). KEKs are wrapped with C_Encrypt under CKM_AES_GCM, not C_WrapKey: the KEK
// must come back into this process, and SoftHSM can't C_WrapKey with GCM (design §3.4, pitfall 6).

const require = createRequire(import.meta.url);
type Pkcs11Module = typeof Pkcs11Types;
let lib: Pkcs11Module | undefined;
// An optional dependency (a native addon): only installations that use an HSM need a compiler.
const pkcs11 = (): Pkcs11Module => {
  if (lib) return lib;
  try {
    lib = require('pkcs11js') as Pkcs11Module;
  } catch {
    throw new KmsError(
      'KeyUnavailable',
      'the pkcs11 root of trust needs the pkcs11js package (a native addon): npm install pkcs11js',
    );
  }
  return lib;
};

export interface Pkcs11Params {
  /** Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** Token label. */
  token: string;
  /** Label of the AES key inside the token. */
  keyLabel: string;
  /** File holding the user PIN; the PIN itself is never stored, logged or passed on argv. */
  pinFile: string;
}

const NONCE = 12;
const TAG = 16;

// C_Initialize once per process and module (pitfall 8); sessions are per root.
const modules = new Map<string, Pkcs11Types.PKCS11>();

function moduleFor(path: string): Pkcs11Types.PKCS11 {
  let m = modules.get(path);
  if (m) return m;
  const p = pkcs11();
  m = new p.PKCS11();
  try {
    m.load(path);
    m.C_Initialize();
  } catch (err) {
    throw mapError(err, `loading PKCS#11 module ${path}`);
  }
  modules.set(path, m);
  return m;
}

/** PKCS#11 return values as messages a user can act on. */
export function mapError(err: unknown, doing: string): KmsError {
  const msg = err instanceof Error ? err.message : String(err);
  const code = /CKR_[A-Z_]+/.exec(msg)?.[0];
  switch (code) {
    case 'CKR_PIN_INCORRECT':
      return new KmsError('WrongRootKey', `${doing}: the token refused the PIN (CKR_PIN_INCORRECT)`);
    case 'CKR_PIN_LOCKED':
      return new KmsError('KeyUnavailable', `${doing}: the token's user PIN is locked (CKR_PIN_LOCKED)`);
    case 'CKR_GENERAL_ERROR':
    case 'CKR_ENCRYPTED_DATA_INVALID':
    case 'CKR_ENCRYPTED_DATA_LEN_RANGE':
      // SoftHSM reports a GCM tag mismatch (wrong AAD, altered blob) as a general error.
      return new KmsError(
        'InvalidCiphertext',
        `${doing}: failed authentication in the token (altered, swapped or wrong key) [${code}]`,
      );
    case 'CKR_DEVICE_REMOVED':
    case 'CKR_TOKEN_NOT_PRESENT':
    case 'CKR_SESSION_HANDLE_INVALID':
      return new KmsError('KeyUnavailable', `${doing}: the token is not available (${code})`);
    default:
      return new KmsError('Pkcs11Error', `${doing}: ${code ?? msg.split('\n')[0]}`);
  }
}

function readPin(params: Pkcs11Params): string {
  try {
    const pin = readFileSync(params.pinFile, 'utf8').replace(/\r?\n$/, '');
    if (!pin) throw new Error('empty');
    return pin;
  } catch {
    throw new KmsError(
      'KeyUnavailable',
      `the PIN file ${params.pinFile} for PKCS#11 token "${params.token}" cannot be read`,
    );
  }
}

function openSession(params: Pkcs11Params): { m: Pkcs11Types.PKCS11; session: Buffer } {
  const p = pkcs11();
  const m = moduleFor(params.module);
  const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === params.token);
  if (!slot) throw new KmsError('KeyUnavailable', `no PKCS#11 token labelled "${params.token}" in ${params.module}`);
  let session: Buffer;
  try {
    session = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  } catch (err) {
    throw mapError(err, `opening a session on token "${params.token}"`);
  }
  try {
    m.C_Login(session, p.CKU_USER, readPin(params));
  } catch (err) {
    if (!(err instanceof Error && err.message.includes('CKR_USER_ALREADY_LOGGED_IN'))) {
      m.C_CloseSession(session);
      throw err instanceof KmsError ? err : mapError(err, `logging in to token "${params.token}"`);
    }
  }
  return { m, session };
}

function findKey(m: Pkcs11Types.PKCS11, session: Buffer, label: string): Buffer | undefined {
  const p = pkcs11();
  m.C_FindObjectsInit(session, [
    { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY },
    { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_LABEL, value: label },
  ]);
  try {
    const found = m.C_FindObjects(session, 2);
    if (found.length > 1)
      throw new KmsError('KeyUnavailable', `more than one AES key labelled "${label}" in the token`);
    return found[0];
  } finally {
    m.C_FindObjectsFinal(session);
  }
}

function generateKey(m: Pkcs11Types.PKCS11, session: Buffer, label: string): Buffer {
  const p = pkcs11();
  try {
    return m.C_GenerateKey(session, { mechanism: p.CKM_AES_KEY_GEN }, [
      { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY },
      { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
      { type: p.CKA_VALUE_LEN, value: 32 },
      { type: p.CKA_TOKEN, value: true },
      { type: p.CKA_PRIVATE, value: true },
      { type: p.CKA_SENSITIVE, value: true },
      { type: p.CKA_EXTRACTABLE, value: false },
      { type: p.CKA_ENCRYPT, value: true },
      { type: p.CKA_DECRYPT, value: true },
      { type: p.CKA_LABEL, value: label },
      { type: p.CKA_ID, value: randomBytes(16) },
    ]);
  } catch (err) {
    throw mapError(err, `generating AES key "${label}"`);
  }
}

function pkcs11Root(
  id: string,
  params: Pkcs11Params,
  m: Pkcs11Types.PKCS11,
  session: Buffer,
  key: Buffer,
): RootOfTrust {
  const p = pkcs11();
  // One session per process, used by one operation at a time (PKCS#11 sessions are not re-entrant).
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => T): Promise<T> => {
    const run = queue.then(fn);
    queue = run.catch(() => undefined);
    return run;
  };
  const gcm = (iv: Buffer, aad: Buffer) => ({
    mechanism: p.CKM_AES_GCM,
    parameter: { type: p.CK_PARAMS_AES_GCM, iv, aad, ivBits: iv.length * 8, tagBits: TAG * 8 },
  });
  return {
    id,
    provider: 'pkcs11',
    wrapKek: (kek, ref) =>
      serial(() => {
        const head = encodeHeader({ alg: ALG_PKCS11_GCM, purpose: PURPOSE.kek, keyId: id, version: 1 });
        const iv = randomBytes(NONCE);
        try {
          m.C_EncryptInit(session, gcm(iv, aadOf(head, kekContext(ref))), key);
          const body = m.C_Encrypt(session, kek, Buffer.alloc(kek.length + TAG));
          return Buffer.concat([head, iv, body]);
        } catch (err) {
          throw mapError(err, `wrapping KEK ${ref.kekId} v${ref.version} in token "${params.token}"`);
        }
      }),
    unwrapKek: (blob, ref) =>
      serial(() => {
        const header = parseHeader(blob);
        checkExpected(header, { purpose: PURPOSE.kek, keyId: id });
        if (header.alg !== ALG_PKCS11_GCM)
          throw new KmsError('InvalidCiphertext', `KEK ${ref.kekId} v${ref.version} was not wrapped by a PKCS#11 root`);
        const b = Buffer.from(blob);
        if (b.length < KWE1_HEADER_LEN + NONCE + TAG)
          throw new KmsError('InvalidCiphertext', 'KWE1 ciphertext is truncated');
        const iv = b.subarray(KWE1_HEADER_LEN, KWE1_HEADER_LEN + NONCE);
        const body = b.subarray(KWE1_HEADER_LEN + NONCE);
        try {
          m.C_DecryptInit(session, gcm(iv, aadOf(b, kekContext(ref))), key);
          return Buffer.from(m.C_Decrypt(session, body, Buffer.alloc(body.length)));
        } catch (err) {
          throw mapError(err, `unwrapping KEK ${ref.kekId} v${ref.version} in token "${params.token}"`);
        }
      }),
  };
}

/** First use: finds the labelled AES key in the token, or generates it there. */
export function createPkcs11Root(id: string, params: Pkcs11Params): { root: RootOfTrust; record: RootRecord } {
  const { m, session } = openSession(params);
  const key = findKey(m, session, params.keyLabel) ?? generateKey(m, session, params.keyLabel);
  return {
    root: pkcs11Root(id, params, m, session, key),
    record: { id, provider: 'pkcs11', params: { ...params }, kcv: null },
  };
}

/** Later uses: the key must exist; a missing key is named, never silently regenerated. */
export function loadPkcs11Root(record: RootRecord): RootOfTrust {
  const params = record.params as unknown as Pkcs11Params;
  const { m, session } = openSession(params);
  const key = findKey(m, session, params.keyLabel);
  if (!key)
    throw new KmsError(
      'WrongRootKey',
      `root ${record.id}: no AES key labelled "${params.keyLabel}" in PKCS#11 token "${params.token}"`,
    );
  return pkcs11Root(record.id, params, m, session, key);
}
