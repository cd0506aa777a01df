import type { ValidationProblem } from './types.ts';

export interface AttemptError {
  kind: 'error';
  address: string;
  /** The connection was never made (tried on the next address; a firewall is the likely cause). */
  beforeConnect: boolean;
  problem: ValidationProblem;
}

export interface Attempt<T> {
  /** Ends the attempt with `result`, once: later calls are ignored. */
  finish(result: T | AttemptError): void;
  error(type: ValidationProblem['type'], message: string, beforeConnect: boolean): void;
  connected(): boolean;
  markConnected(): void;
}

/**
 * One connection to one address that ends exactly once: with its result, an error, or at the
 * deadline. The timeout says whether the connection was made, since "never connected" points at a
 * firewall and "connected, then silence" at the server.
 */
export function startAttempt<T>(opts: {
  address: string;
  /** What each problem detail starts with: the address and port, or the URL fetched. */
  where: string;
  deadline: number;
  timeoutAfterConnect: string;
  resolve: (result: T | AttemptError) => void;
  /** Releases the socket; called once, after `resolve`. */
  close: () => void;
}): Attempt<T> {
  let connected = false;
  let settled = false;
  const finish = (result: T | AttemptError): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    opts.resolve(result);
    opts.close();
  };
  const error = (type: ValidationProblem['type'], message: string, beforeConnect: boolean): void =>
    finish({
      kind: 'error',
      address: opts.address,
      beforeConnect,
      problem: { type, detail: `${opts.where}: ${message}` },
    });
  const timer = setTimeout(
    () =>
      connected
        ? error('connection', opts.timeoutAfterConnect, false)
        : error('connection', 'Timeout during connect (likely firewall problem)', true),
    Math.max(0, opts.deadline - Date.now()),
  );
  return { finish, error, connected: () => connected, markConnected: () => (connected = true) };
}
