import { createHash, createPublicKey, type KeyObject } from 'node:crypto';

import type { RsaPSS } from 'pkcs11js';

import { rawToDer } from '../ecdsa-signature.ts';
import { KmsError } from '../errors.ts';
import type { AsymmetricAlg } from '../key-types.ts';
import { digestOf, PSS_SALT_LENGTH, type SignatureAlgorithm } from '../signer.ts';
import type { Pkcs11Lib } from './module.ts';
import type { SessionPool, SessionScope } from './session-pool.ts';

/** Where a key lives in the token: what Keyward stores instead of key material. */
export interface TokenKeyRef {
  token: string;
  /** CKA_ID, hex: the key id's 16 UUID bytes. */
  id: string;
  /** CKA_LABEL. */
  label: string;
}

/** The private key object's protection attributes, read back from the token after generation. */
export interface TokenKeyAttributes {
  extractable: boolean;
  sensitive: boolean;
  neverExtractable: boolean;
  alwaysSensitive: boolean;
  token: boolean;
  private: boolean;
}

export const HSM_ALGS: readonly AsymmetricAlg[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

const CURVES: Partial<Record<AsymmetricAlg, { params: string; crv: string; width: number }>> = {
  // DER OBJECT IDENTIFIERs of prime256v1 and secp384r1 (CKA_EC_PARAMS).
  'ecdsa-p256': { params: '06082a8648ce3d030107', crv: 'P-256', width: 32 },
  'ecdsa-p384': { params: '06052b81040022', crv: 'P-384', width: 48 },
};

// DigestInfo prefixes (RFC 8017 §9.2 note 1): CKM_RSA_PKCS signs DigestInfo ‖ digest, so the
// message is hashed here and a CRL of any size costs the token one small operation.
const DIGEST_INFO_SHA256 = Buffer.from('3031300d060960864801650304020105000420', 'hex');

function keyIdBytes(keyId: string): Buffer {
  return Buffer.from(keyId.replace(/-/g, ''), 'hex');
}

export function tokenKeyRef(token: string, keyId: string): TokenKeyRef {
  return { token, id: keyIdBytes(keyId).toString('hex'), label: `keyward-${keyId}` };
}

function findPrivateKey(s: SessionScope, ref: TokenKeyRef): Buffer | undefined {
  const { m, lib, session } = s;
  m.C_FindObjectsInit(session, [
    { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
    { type: lib.CKA_ID, value: Buffer.from(ref.id, 'hex') },
  ]);
  try {
    const found = m.C_FindObjects(session, 2);
    if (found.length > 1)
      throw new KmsError('KeyUnavailable', `more than one private key with CKA_ID ${ref.id} in token "${ref.token}"`);
    return found[0];
  } finally {
    m.C_FindObjectsFinal(session);
  }
}

function missingKey(ref: TokenKeyRef): KmsError {
  return new KmsError(
    'KeyUnavailable',
    `the private key "${ref.label}" (CKA_ID ${ref.id}) is not in token "${ref.token}": the token was re-initialised, replaced or the key deleted`,
  );
}

function privateKeyHandle(s: SessionScope, ref: TokenKeyRef): Buffer {
  return s.handle(
    `priv:${ref.id}`,
    () => findPrivateKey(s, ref),
    () => missingKey(ref),
  );
}

function readAttributes(s: SessionScope, handle: Buffer): TokenKeyAttributes {
  const { m, lib, session } = s;
  const values = m.C_GetAttributeValue(session, handle, [
    { type: lib.CKA_EXTRACTABLE },
    { type: lib.CKA_SENSITIVE },
    { type: lib.CKA_NEVER_EXTRACTABLE },
    { type: lib.CKA_ALWAYS_SENSITIVE },
    { type: lib.CKA_TOKEN },
    { type: lib.CKA_PRIVATE },
  ]);
  const flag = (i: number) => {
    const v = values[i]?.value;
    return Buffer.isBuffer(v) ? v[0] === 1 : v === true;
  };
  return {
    extractable: flag(0),
    sensitive: flag(1),
    neverExtractable: flag(2),
    alwaysSensitive: flag(3),
    token: flag(4),
    private: flag(5),
  };
}

function attr(values: { value?: unknown }[], i: number): Buffer {
  const v = values[i]?.value;
  if (!Buffer.isBuffer(v)) throw new KmsError('Pkcs11Error', 'the token returned no public key attribute');
  return v;
}

/** The public key of a token key pair as a KeyObject, from CKA_EC_POINT or CKA_MODULUS. */
function readPublicKey(s: SessionScope, handle: Buffer, alg: AsymmetricAlg): KeyObject {
  const { m, lib, session } = s;
  const curve = CURVES[alg];
  const b64u = (b: Buffer) => b.toString('base64url');
  if (curve) {
    let point = attr(m.C_GetAttributeValue(session, handle, [{ type: lib.CKA_EC_POINT }]), 0);
    // PKCS#11 says CKA_EC_POINT is a DER OCTET STRING; some modules give the bare point.
    if (point.length !== 2 * curve.width + 1) point = point.subarray(point[1] === 0x81 ? 3 : 2);
    if (point[0] !== 0x04 || point.length !== 2 * curve.width + 1)
      throw new KmsError('Pkcs11Error', 'the token returned an EC point that is not an uncompressed point');
    const x = point.subarray(1, 1 + curve.width);
    const y = point.subarray(1 + curve.width);
    return createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: b64u(x), y: b64u(y) }, format: 'jwk' });
  }
  const values = m.C_GetAttributeValue(session, handle, [{ type: lib.CKA_MODULUS }, { type: lib.CKA_PUBLIC_EXPONENT }]);
  return createPublicKey({ key: { kty: 'RSA', n: b64u(attr(values, 0)), e: b64u(attr(values, 1)) }, format: 'jwk' });
}

function templates(lib: Pkcs11Lib, alg: AsymmetricAlg, ref: TokenKeyRef) {
  const common = [
    { type: lib.CKA_TOKEN, value: true },
    { type: lib.CKA_ID, value: Buffer.from(ref.id, 'hex') },
    { type: lib.CKA_LABEL, value: ref.label },
  ];
  // Never extractable and sensitive: the private key can't leave the token in any form, wrapped or
  // not. CKA_PRIVATE keeps it (and its attributes) behind the user login.
  const privateTemplate = [
    ...common,
    { type: lib.CKA_PRIVATE, value: true },
    { type: lib.CKA_SENSITIVE, value: true },
    { type: lib.CKA_EXTRACTABLE, value: false },
    { type: lib.CKA_SIGN, value: true },
    { type: lib.CKA_DECRYPT, value: false },
    { type: lib.CKA_UNWRAP, value: false },
    { type: lib.CKA_DERIVE, value: false },
  ];
  const publicTemplate = [...common, { type: lib.CKA_VERIFY, value: true }, { type: lib.CKA_PRIVATE, value: false }];
  const curve = CURVES[alg];
  if (curve)
    return {
      mechanism: { mechanism: lib.CKM_EC_KEY_PAIR_GEN },
      publicTemplate: [...publicTemplate, { type: lib.CKA_EC_PARAMS, value: Buffer.from(curve.params, 'hex') }],
      privateTemplate,
    };
  const bits = Number(alg.slice(4));
  return {
    mechanism: { mechanism: lib.CKM_RSA_PKCS_KEY_PAIR_GEN },
    publicTemplate: [
      ...publicTemplate,
      { type: lib.CKA_MODULUS_BITS, value: bits },
      { type: lib.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
    ],
    privateTemplate,
  };
}

/**
 * Generates a key pair inside the token. The private key is checked to be sensitive and never
 * extractable before it is used; a token that ignored the template has the pair deleted again.
 */
export async function generateTokenKey(
  pool: SessionPool,
  keyId: string,
  alg: AsymmetricAlg,
): Promise<{ ref: TokenKeyRef; publicKey: KeyObject; attributes: TokenKeyAttributes }> {
  if (!HSM_ALGS.includes(alg))
    throw new KmsError(
      'InvalidInput',
      `an HSM key can be ${HSM_ALGS.join(', ')}; ${alg} is only available with protection "wrapped"`,
    );
  const ref = tokenKeyRef(pool.settings.token, keyId);
  return pool.run(`generating ${alg} key ${ref.label}`, async (s) => {
    const t = templates(s.lib, alg, ref);
    const pair = await s.m.C_GenerateKeyPairAsync(s.session, t.mechanism, t.publicTemplate, t.privateTemplate);
    const attributes = readAttributes(s, pair.privateKey);
    if (attributes.extractable || !attributes.sensitive || !attributes.token) {
      s.m.C_DestroyObject(s.session, pair.privateKey);
      s.m.C_DestroyObject(s.session, pair.publicKey);
      throw new KmsError(
        'Pkcs11Error',
        `token "${ref.token}" made a private key that is extractable or not sensitive; it was deleted again`,
      );
    }
    return { ref, publicKey: readPublicKey(s, pair.publicKey, alg), attributes };
  });
}

/** The private key's protection attributes as the token reports them now. */
export function tokenKeyAttributes(pool: SessionPool, ref: TokenKeyRef): Promise<TokenKeyAttributes> {
  return pool.run(`reading the attributes of ${ref.label}`, (s) => readAttributes(s, privateKeyHandle(s, ref)));
}

/**
 * Signs `data` in the token. The digest is computed here (SoftHSM has no CKM_ECDSA_SHA256, and
 * hashing here keeps a large CRL out of the token); ECDSA comes back as r‖s and leaves as DER.
 */
export function tokenSign(
  pool: SessionPool,
  ref: TokenKeyRef,
  algorithm: SignatureAlgorithm,
  data: Uint8Array,
): Promise<Uint8Array> {
  const hash = digestOf(algorithm);
  if (!hash) throw new KmsError('InvalidInput', `${algorithm} is not available for HSM keys`);
  const digest = createHash(hash).update(data).digest();
  return pool.run(`signing with ${ref.label}`, async (s) => {
    const { m, lib, session } = s;
    const key = privateKeyHandle(s, ref);
    if (algorithm === 'ecdsa-sha256' || algorithm === 'ecdsa-sha384') {
      m.C_SignInit(session, { mechanism: lib.CKM_ECDSA }, key);
      return rawToDer(await m.C_SignAsync(session, digest, Buffer.alloc(132)));
    }
    if (algorithm === 'rsa-pss-sha256') {
      m.C_SignInit(
        session,
        {
          mechanism: lib.CKM_RSA_PKCS_PSS,
          parameter: {
            type: lib.CK_PARAMS_RSA_PSS,
            hashAlg: lib.CKM_SHA256,
            mgf: lib.CKG_MGF1_SHA256,
            saltLen: PSS_SALT_LENGTH,
          } satisfies RsaPSS as RsaPSS,
        },
        key,
      );
      return new Uint8Array(await m.C_SignAsync(session, digest, Buffer.alloc(512)));
    }
    m.C_SignInit(session, { mechanism: lib.CKM_RSA_PKCS }, key);
    return new Uint8Array(await m.C_SignAsync(session, Buffer.concat([DIGEST_INFO_SHA256, digest]), Buffer.alloc(512)));
  });
}

/** Deletes both halves of a key pair from the token; a key that is already gone is not an error. */
export function destroyTokenKey(pool: SessionPool, ref: TokenKeyRef): Promise<number> {
  return pool.run(`deleting ${ref.label}`, (s) => {
    const { m, lib, session } = s;
    m.C_FindObjectsInit(session, [{ type: lib.CKA_ID, value: Buffer.from(ref.id, 'hex') }]);
    let found: Buffer[];
    try {
      found = m.C_FindObjects(session, 8);
    } finally {
      m.C_FindObjectsFinal(session);
    }
    for (const h of found) m.C_DestroyObject(session, h);
    return found.length;
  });
}
