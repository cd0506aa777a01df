/** Level 0 of the hierarchy: wraps and unwraps KEK versions, and nothing else. */
export interface RootOfTrust {
  readonly id: string;
  readonly provider: 'file' | 'passphrase' | 'pkcs11' | 'awskms' | 'shares';
  wrapKek(kek: Buffer, ref: KekRef): Promise<Buffer>;
  unwrapKek(blob: Uint8Array, ref: KekRef): Promise<Buffer>;
}

export interface KekRef {
  kekId: string;
  version: number;
  installId: string;
}

/** What a provider stores in kms_roots: non-secret parameters and a key check value. */
export interface RootRecord {
  id: string;
  provider: RootOfTrust['provider'];
  params: Record<string, unknown>;
  kcv: Uint8Array | null;
}
