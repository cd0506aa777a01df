import { randomBytes } from 'node:crypto';

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
import { pinFromFile, type Pkcs11Lib } from '../pkcs11/module.ts';
import { type SessionPool, sessionPool, type SessionScope } from '../pkcs11/session-pool.ts';
import { kekContext } from './symmetric.ts';
import type { RootOfTrust, RootRecord } from './types.ts';

// Root of trust in a PKCS#11 token: an AES-256 key that never leaves it (CKA_EXTRACTABLE false,
// CKA_SENSITIVE true). KEKs are wrapped with C_Encrypt under CKM_AES_GCM, not C_WrapKey: the KEK
// must come back into this process, and SoftHSM2 refuses CKM_AES_GCM with C_WrapKey.

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

function poolFor(params: Pkcs11Params): SessionPool {
  return sessionPool({ module: params.module, token: params.token, pin: pinFromFile(params.pinFile, params.token) });
}

function findKey({ m, lib: p, session }: SessionScope, label: string): Buffer | undefined {
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

function generateKey({ m, lib: p, session }: SessionScope, label: string): Buffer {
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
}

function missingKey(id: string, params: Pkcs11Params): KmsError {
  return new KmsError(
    'WrongRootKey',
    `root ${id}: no AES key labelled "${params.keyLabel}" in PKCS#11 token "${params.token}"`,
  );
}

function pkcs11Root(id: string, params: Pkcs11Params, pool: SessionPool): RootOfTrust {
  const gcm = (p: Pkcs11Lib, iv: Buffer, aad: Buffer) => ({
    mechanism: p.CKM_AES_GCM,
    parameter: { type: p.CK_PARAMS_AES_GCM, iv, aad, ivBits: iv.length * 8, tagBits: TAG * 8 },
  });
  const key = (s: SessionScope) =>
    s.handle(
      `aes:${params.keyLabel}`,
      () => findKey(s, params.keyLabel),
      () => missingKey(id, params),
    );
  return {
    id,
    provider: 'pkcs11',
    wrapKek: (kek, ref) =>
      pool.run(`wrapping KEK ${ref.kekId} v${ref.version}`, (s) => {
        const head = encodeHeader({ alg: ALG_PKCS11_GCM, purpose: PURPOSE.kek, keyId: id, version: 1 });
        const iv = randomBytes(NONCE);
        s.m.C_EncryptInit(s.session, gcm(s.lib, iv, aadOf(head, kekContext(ref))), key(s));
        const body = s.m.C_Encrypt(s.session, kek, Buffer.alloc(kek.length + TAG));
        return Buffer.concat([head, iv, body]);
      }),
    unwrapKek: (blob, ref) => {
      const header = parseHeader(blob);
      checkExpected(header, { purpose: PURPOSE.kek, keyId: id });
      if (header.alg !== ALG_PKCS11_GCM)
        throw new KmsError('InvalidCiphertext', `KEK ${ref.kekId} v${ref.version} was not wrapped by a PKCS#11 root`);
      const b = Buffer.from(blob);
      if (b.length < KWE1_HEADER_LEN + NONCE + TAG)
        throw new KmsError('InvalidCiphertext', 'KWE1 ciphertext is truncated');
      const iv = b.subarray(KWE1_HEADER_LEN, KWE1_HEADER_LEN + NONCE);
      const body = b.subarray(KWE1_HEADER_LEN + NONCE);
      return pool.run(`unwrapping KEK ${ref.kekId} v${ref.version}`, (s) => {
        s.m.C_DecryptInit(s.session, gcm(s.lib, iv, aadOf(b, kekContext(ref))), key(s));
        return Buffer.from(s.m.C_Decrypt(s.session, body, Buffer.alloc(body.length)));
      });
    },
  };
}

/** First use: finds the labelled AES key in the token, or generates it there. */
export async function createPkcs11Root(
  id: string,
  params: Pkcs11Params,
): Promise<{ root: RootOfTrust; record: RootRecord }> {
  const pool = poolFor(params);
  await pool.run(
    `finding or generating AES key "${params.keyLabel}"`,
    (s) => findKey(s, params.keyLabel) ?? generateKey(s, params.keyLabel),
  );
  return {
    root: pkcs11Root(id, params, pool),
    record: { id, provider: 'pkcs11', params: { ...params }, kcv: null },
  };
}

/** Later uses: the key must exist; a missing key is named, never silently regenerated. */
export async function loadPkcs11Root(record: RootRecord): Promise<RootOfTrust> {
  const params = record.params as unknown as Pkcs11Params;
  const pool = poolFor(params);
  await pool.run(`logging in to token "${params.token}"`, (s) => {
    if (!findKey(s, params.keyLabel)) throw missingKey(record.id, params);
  });
  return pkcs11Root(record.id, params, pool);
}
