import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import type * as Pkcs11Types from 'pkcs11js';

import { KmsError } from '../errors.ts';

const require = createRequire(import.meta.url);
export type Pkcs11Lib = typeof Pkcs11Types;
export type Pkcs11 = Pkcs11Types.PKCS11;

let lib: Pkcs11Lib | undefined;

/** The pkcs11js addon, loaded on first use: only installations that use a token need a compiler. */
export function pkcs11(): Pkcs11Lib {
  if (lib) return lib;
  try {
    lib = require('pkcs11js') as Pkcs11Lib;
  } catch {
    throw new KmsError('KeyUnavailable', 'PKCS#11 needs the pkcs11js package (a native addon): npm install pkcs11js');
  }
  return lib;
}

/** Where a token is and how to log in; the PIN is read from a file or given by the configuration. */
export interface TokenSettings {
  /** Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** Token label. */
  token: string;
  /** The user PIN, read when a session logs in (never stored, logged or put on argv). */
  pin: () => string;
}

export interface LoadedModule {
  m: Pkcs11;
  /** Bumped by every C_Finalize/C_Initialize: sessions opened under an older generation are gone. */
  generation: number;
  /** Sessions checked out right now (an operation may be running on one of libuv's threads). */
  busy: number;
}

// C_Initialize once per process and module: a second call fails, and C_Finalize ends every session
// of every user of the module in this process (the root of trust and the signing pool alike).
const modules = new Map<string, LoadedModule>();

export function loadModule(path: string): LoadedModule {
  let loaded = modules.get(path);
  if (loaded) return loaded;
  const m = new (pkcs11().PKCS11)();
  try {
    m.load(path);
    // Sessions of the pool sign on libuv's threads at once, so the module must lock (PKCS#11 §5.4).
    m.C_Initialize({ flags: pkcs11().CKF_OS_LOCKING_OK });
  } catch (err) {
    throw mapError(err, `loading PKCS#11 module ${path}`);
  }
  loaded = { m, generation: 1, busy: 0 };
  modules.set(path, loaded);
  return loaded;
}

/**
 * Re-initialises a module after its token went away: some modules (SoftHSM among them) only see a
 * token that came back after C_Finalize + C_Initialize. Every session of the process is lost.
 */
export async function reinitialiseModule(path: string, seenGeneration: number): Promise<LoadedModule> {
  const loaded = loadModule(path);
  // C_Finalize under an operation still running on another thread would pull the module from under
  // it; on a token that is gone those operations fail fast, so waiting is short.
  for (let waited = 0; loaded.busy > 0 && waited < 5_000; waited += 10)
    await new Promise((resolve) => setTimeout(resolve, 10));
  // Another caller already re-initialised since this one last looked: nothing more to do.
  if (loaded.generation !== seenGeneration) return loaded;
  try {
    loaded.m.C_Finalize();
  } catch {
    // Already finalised or the library is confused; C_Initialize below decides.
  }
  try {
    loaded.m.C_Initialize({ flags: pkcs11().CKF_OS_LOCKING_OK });
  } catch (err) {
    throw mapError(err, `re-initialising PKCS#11 module ${path}`);
  }
  loaded.generation++;
  return loaded;
}

/** The CKR_* name in a pkcs11js error, if any. */
export function ckrOf(err: unknown): string | undefined {
  const msg = err instanceof Error ? err.message : String(err);
  return /CKR_[A-Z0-9_]+/.exec(msg)?.[0];
}

/**
 * Return values that mean the session, the login or the token itself is gone (a token removed,
 * re-initialised, or a module that lost its state): a fresh session (and login) may fix them.
 */
const RECOVERABLE = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_OBJECT_HANDLE_INVALID',
  'CKR_KEY_HANDLE_INVALID',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_DEVICE_REMOVED',
  'CKR_DEVICE_ERROR',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_GENERAL_ERROR',
]);

export function isRecoverable(err: unknown): boolean {
  if (err instanceof TokenAbsent) return true;
  const code = ckrOf(err);
  return code !== undefined && RECOVERABLE.has(code);
}

/** No slot holds a token with the wanted label (removed, or not yet back). */
export class TokenAbsent extends KmsError {
  constructor(settings: Pick<TokenSettings, 'module' | 'token'>) {
    super(
      'KeyUnavailable',
      `no PKCS#11 token labelled "${settings.token}" in ${settings.module} (removed or not initialised); it is used again as soon as it is back`,
    );
  }
}

/** PKCS#11 return values as messages a user can act on. */
export function mapError(err: unknown, doing: string): KmsError {
  if (err instanceof KmsError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const code = ckrOf(err);
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
    case 'CKR_TOKEN_NOT_RECOGNIZED':
    case 'CKR_DEVICE_ERROR':
    case 'CKR_SESSION_HANDLE_INVALID':
    case 'CKR_SESSION_CLOSED':
    case 'CKR_OBJECT_HANDLE_INVALID':
    case 'CKR_KEY_HANDLE_INVALID':
    case 'CKR_USER_NOT_LOGGED_IN':
      return new KmsError('KeyUnavailable', `${doing}: the token is not available (${code})`);
    case 'CKR_MECHANISM_INVALID':
    case 'CKR_MECHANISM_PARAM_INVALID':
    case 'CKR_KEY_TYPE_INCONSISTENT':
    case 'CKR_KEY_FUNCTION_NOT_PERMITTED':
      return new KmsError('Pkcs11Error', `${doing}: the token does not support this (${code})`);
    default:
      return new KmsError('Pkcs11Error', `${doing}: ${code ?? msg.split('\n')[0]}`);
  }
}

/** Reads a PIN from a file (one line); the file's name appears in errors, its content never. */
export function pinFromFile(path: string, token: string): () => string {
  return () => {
    try {
      const pin = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
      if (!pin) throw new Error('empty');
      return pin;
    } catch {
      throw new KmsError('KeyUnavailable', `the PIN file ${path} for PKCS#11 token "${token}" cannot be read`);
    }
  };
}
