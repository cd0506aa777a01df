import {
  isRecoverable,
  loadModule,
  mapError,
  type Pkcs11,
  pkcs11,
  type Pkcs11Lib,
  reinitialiseModule,
  TokenAbsent,
  type TokenSettings,
} from './module.ts';

/** What one operation gets: a logged-in session of its own, and handles found once per token reset. */
export interface SessionScope {
  readonly m: Pkcs11;
  readonly lib: Pkcs11Lib;
  readonly session: Buffer;
  /** An object handle, looked up once and forgotten when the token is reset. */
  handle(key: string, find: () => Buffer | undefined, missing: () => Error): Buffer;
}

interface PooledSession {
  session: Buffer;
  /** The module generation it was opened under; an older one died with a C_Finalize. */
  generation: number;
}

/** After a failed recovery, later requests fail at once for this long instead of re-initialising. */
const RECOVERY_BACKOFF_MS = 1_000;

/**
 * A small pool of logged-in sessions on one token, shared by every request of the process.
 * PKCS#11 sessions are not re-entrant, so each operation has one to itself; with several, signatures
 * run in parallel on libuv's threads. When the token goes away or is reset (sessions, handles or the
 * login lost) the pool closes what it has, logs in on a new session (re-initialising the module if
 * it must) and retries the operation once; errors name the CKR_* value.
 */
export class SessionPool {
  private idle: PooledSession[] = [];
  private checkedOut = 0;
  private readonly waiters: (() => void)[] = [];
  private handles = new Map<string, Buffer>();
  private handlesGeneration = 0;
  private recovering: Promise<void> | undefined;
  private failedAt = 0;
  private lastFailure: Error | undefined;

  constructor(
    readonly settings: TokenSettings,
    readonly size = 4,
  ) {}

  /** Runs `fn` on a session of its own; `doing` names the operation in errors. */
  async run<T>(doing: string, fn: (scope: SessionScope) => T | Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let pooled: PooledSession | undefined;
      try {
        pooled = await this.acquire();
        const result = await fn(this.scope(pooled));
        this.release(pooled, false);
        return result;
      } catch (err) {
        const recoverable = isRecoverable(err);
        if (pooled) this.release(pooled, recoverable);
        if (attempt === 0 && recoverable) {
          try {
            await this.recover();
          } catch (again) {
            throw this.describe(again, doing);
          }
          continue;
        }
        throw this.describe(err, doing);
      }
    }
  }

  /** Closes every idle session (the module stays loaded for other users in this process). */
  close(): void {
    const { m } = loadModule(this.settings.module);
    for (const s of this.idle) this.closeQuietly(m, s.session);
    this.idle = [];
  }

  private describe(err: unknown, doing: string): Error {
    const mapped = mapError(err, `${doing} in token "${this.settings.token}"`);
    return mapped;
  }

  private scope(pooled: PooledSession): SessionScope {
    const { m } = loadModule(this.settings.module);
    return {
      m,
      lib: pkcs11(),
      session: pooled.session,
      handle: (key, find, missing) => {
        if (this.handlesGeneration !== pooled.generation) {
          this.handles = new Map();
          this.handlesGeneration = pooled.generation;
        }
        let h = this.handles.get(key);
        if (h) return h;
        h = find();
        if (!h) throw missing();
        this.handles.set(key, h);
        return h;
      },
    };
  }

  private async acquire(): Promise<PooledSession> {
    for (;;) {
      const { generation } = loadModule(this.settings.module);
      // Sessions opened before a re-initialisation (by this pool or another on the module) are gone.
      this.idle = this.idle.filter((s) => s.generation === generation);
      const ready = this.idle.pop();
      if (ready) {
        this.checkOut(1);
        return ready;
      }
      if (this.checkedOut < this.size) {
        this.checkOut(1);
        try {
          return this.open();
        } catch (err) {
          this.checkOut(-1);
          this.wake();
          throw err;
        }
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private checkOut(n: 1 | -1): void {
    this.checkedOut += n;
    loadModule(this.settings.module).busy += n;
  }

  private release(pooled: PooledSession, broken: boolean): void {
    this.checkOut(-1);
    const { m, generation } = loadModule(this.settings.module);
    if (broken || pooled.generation !== generation) this.closeQuietly(m, pooled.session);
    else this.idle.push(pooled);
    this.wake();
  }

  private wake(): void {
    this.waiters.shift()?.();
  }

  private open(): PooledSession {
    const { m, generation } = loadModule(this.settings.module);
    const lib = pkcs11();
    const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === this.settings.token);
    if (!slot) throw new TokenAbsent(this.settings);
    const session = m.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
    try {
      // The login belongs to the token, not the session: after the first, the others are logged in.
      m.C_Login(session, lib.CKU_USER, this.settings.pin());
    } catch (err) {
      if (!(err instanceof Error && err.message.includes('CKR_USER_ALREADY_LOGGED_IN'))) {
        this.closeQuietly(m, session);
        throw err;
      }
    }
    return { session, generation };
  }

  /**
   * One recovery at a time: drop every idle session, then open a new one (which logs in again). If
   * even that fails the module is re-initialised, which some modules need to see a token again.
   */
  private recover(): Promise<void> {
    if (Date.now() - this.failedAt < RECOVERY_BACKOFF_MS && this.lastFailure) return Promise.reject(this.lastFailure);
    this.recovering ??= (async () => {
      const loaded = loadModule(this.settings.module);
      for (const s of this.idle) this.closeQuietly(loaded.m, s.session);
      this.idle = [];
      this.handles = new Map();
      let fresh: PooledSession;
      try {
        fresh = this.open();
      } catch (err) {
        if (!isRecoverable(err)) throw err;
        await reinitialiseModule(this.settings.module, loaded.generation);
        fresh = this.open();
      }
      this.idle.push(fresh);
      this.lastFailure = undefined;
    })()
      .catch((err: unknown) => {
        this.failedAt = Date.now();
        this.lastFailure = err instanceof Error ? err : new Error(String(err));
        throw err;
      })
      .finally(() => (this.recovering = undefined));
    return this.recovering;
  }

  private closeQuietly(m: Pkcs11, session: Buffer): void {
    try {
      m.C_CloseSession(session);
    } catch {
      // A session of a removed token or an older module generation is already gone.
    }
  }
}

const pools = new Map<string, SessionPool>();

/** One pool per module and token in a process: the root of trust and the signing keys share it. */
export function sessionPool(settings: TokenSettings, size?: number): SessionPool {
  const key = `${settings.module}\0${settings.token}`;
  let pool = pools.get(key);
  if (!pool) {
    pool = new SessionPool(settings, size);
    pools.set(key, pool);
  }
  return pool;
}
