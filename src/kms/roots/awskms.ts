import { createHash } from 'node:crypto';

import type * as AwsKms from '@aws-sdk/client-kms';

import { ALG_AWS_KMS, checkExpected, encodeHeader, KWE1_HEADER_LEN, parseHeader, PURPOSE } from '../container.ts';
import { encodeContext } from '../encryption-context.ts';
import { KmsError } from '../errors.ts';
import { kekContext } from './symmetric.ts';
import type { KekRef, RootOfTrust, RootRecord } from './types.ts';

// Type-only: erased at run time, so the SDK is still loaded on first use only.
type AwsKmsModule = typeof AwsKms;

// Root of trust in AWS KMS: KEKs are encrypted by a symmetric KMS key with an
// encryption context that repeats ours and binds the KWE1 header through kw:aad. Credentials come
// from the SDK's default chain (instance role, SSO, environment) and never pass through Keyward.

export interface AwsKmsParams {
  /** Full key ARN; Decrypt answers are checked against it. */
  keyArn: string;
  /** Defaults to the region in the ARN. */
  region?: string;
}

interface KmsApi {
  encrypt(
    plaintext: Uint8Array,
    context: Record<string, string>,
  ): Promise<{ blob: Uint8Array; keyId: string | undefined }>;
  decrypt(
    blob: Uint8Array,
    context: Record<string, string>,
  ): Promise<{ plaintext: Uint8Array; keyId: string | undefined }>;
}

function regionOf(params: AwsKmsParams): string {
  const region = params.region ?? params.keyArn.split(':')[3];
  if (!region)
    throw new KmsError('InvalidInput', `"${params.keyArn}" is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)`);
  return region;
}

/** The SDK is loaded on first use only, so installations without AWS pay nothing for it. */
function awsClient(params: AwsKmsParams): KmsApi {
  let client: Promise<{ send: (cmd: unknown) => Promise<unknown>; mod: AwsKmsModule }> | undefined;
  const get = () =>
    (client ??= import('@aws-sdk/client-kms').then((mod) => {
      const c = new mod.KMSClient({ region: regionOf(params) });
      return { send: (cmd: unknown) => c.send(cmd as never) as Promise<unknown>, mod };
    }));
  return {
    encrypt: async (plaintext, context) => {
      const { send, mod } = await get();
      const r = (await send(
        new mod.EncryptCommand({
          KeyId: params.keyArn,
          Plaintext: plaintext,
          EncryptionContext: context,
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        }),
      )) as { CiphertextBlob?: Uint8Array; KeyId?: string };
      if (!r.CiphertextBlob) throw new KmsError('KeyUnavailable', 'AWS KMS returned no ciphertext');
      return { blob: r.CiphertextBlob, keyId: r.KeyId };
    },
    decrypt: async (blob, context) => {
      const { send, mod } = await get();
      const r = (await send(
        new mod.DecryptCommand({
          KeyId: params.keyArn,
          CiphertextBlob: blob,
          EncryptionContext: context,
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        }),
      )) as { Plaintext?: Uint8Array; KeyId?: string };
      if (!r.Plaintext) throw new KmsError('KeyUnavailable', 'AWS KMS returned no plaintext');
      return { plaintext: r.Plaintext, keyId: r.KeyId };
    },
  };
}

/** The KMS encryption context: ours plus kw:aad, the hash of the KWE1 header and canonical context. */
export function awsContext(head: Uint8Array, ref: KekRef): Record<string, string> {
  const ctx = kekContext(ref);
  const aad = createHash('sha256').update(head.subarray(0, KWE1_HEADER_LEN)).update(encodeContext(ctx)).digest('hex');
  return { ...ctx, 'kw:aad': aad };
}

function mapAwsError(err: unknown, doing: string, arn: string): KmsError {
  if (err instanceof KmsError) return err;
  const name = (err as { name?: string }).name ?? 'Error';
  switch (name) {
    case 'InvalidCiphertextException':
      return new KmsError(
        'InvalidCiphertext',
        `${doing}: AWS KMS refused the ciphertext (altered, swapped or wrong context)`,
      );
    case 'AccessDeniedException':
      return new KmsError('AccessDenied', `${doing}: AWS KMS denied access to ${arn}`);
    case 'DisabledException':
    case 'KMSInvalidStateException':
      // A KMS root key that is disabled or pending deletion takes every CA with it: say so, since
      // re-enabling it (or cancelling the deletion) in AWS is the only way back.
      return new KmsError(
        'KeyUnavailable',
        `${doing}: the AWS KMS key ${arn} is disabled or pending deletion; every KEK depends on it`,
      );
    case 'NotFoundException':
      return new KmsError('WrongRootKey', `${doing}: the AWS KMS key ${arn} does not exist`);
    default:
      return new KmsError('KeyUnavailable', `${doing}: AWS KMS ${name}`);
  }
}

export function awsKmsRoot(id: string, params: AwsKmsParams, api: KmsApi = awsClient(params)): RootOfTrust {
  return {
    id,
    provider: 'awskms',
    wrapKek: async (kek, ref) => {
      const head = encodeHeader({ alg: ALG_AWS_KMS, purpose: PURPOSE.kek, keyId: id, version: 1 });
      try {
        const { blob } = await api.encrypt(kek, awsContext(head, ref));
        const len = Buffer.alloc(2);
        len.writeUInt16BE(blob.length);
        return Buffer.concat([head, len, blob]);
      } catch (err) {
        throw mapAwsError(err, `wrapping KEK ${ref.kekId} v${ref.version}`, params.keyArn);
      }
    },
    unwrapKek: async (blob, ref) => {
      const header = parseHeader(blob);
      checkExpected(header, { purpose: PURPOSE.kek, keyId: id });
      const b = Buffer.from(blob);
      if (header.alg !== ALG_AWS_KMS || b.length < KWE1_HEADER_LEN + 2)
        throw new KmsError('InvalidCiphertext', `KEK ${ref.kekId} v${ref.version} was not wrapped by AWS KMS`);
      const len = b.readUInt16BE(KWE1_HEADER_LEN);
      if (b.length !== KWE1_HEADER_LEN + 2 + len)
        throw new KmsError('InvalidCiphertext', 'KWE1 AWS KMS body length disagrees with its prefix');
      try {
        const r = await api.decrypt(b.subarray(KWE1_HEADER_LEN + 2), awsContext(b, ref));
        // Decrypt may answer with another key the credentials can use (KeyId is optional for
        // symmetric ciphertexts); only the configured key is our root.
        if (r.keyId !== params.keyArn)
          throw new KmsError(
            'WrongRootKey',
            `AWS KMS decrypted with ${r.keyId ?? 'an unnamed key'}, not ${params.keyArn}`,
          );
        return Buffer.from(r.plaintext);
      } catch (err) {
        throw mapAwsError(err, `unwrapping KEK ${ref.kekId} v${ref.version}`, params.keyArn);
      }
    },
  };
}

export function createAwsKmsRoot(id: string, params: AwsKmsParams): { root: RootOfTrust; record: RootRecord } {
  regionOf(params);
  return { root: awsKmsRoot(id, params), record: { id, provider: 'awskms', params: { ...params }, kcv: null } };
}

export function loadAwsKmsRoot(record: RootRecord): RootOfTrust {
  return awsKmsRoot(record.id, record.params as unknown as AwsKmsParams);
}
