/**
 * SQLSTATEs that mean the server went away or can't take a session now (PostgreSQL Appendix A):
 * class 08 connection exceptions, admin/crash shutdown (57P01/57P02, a restart or
 * pg_terminate_backend), cannot connect now (57P03, starting up or in recovery), too many
 * connections (53300).
 */
const SQLSTATES = new Set(['08000', '08001', '08003', '08004', '08006', '57P01', '57P02', '57P03', '53300']);
/** Socket errors on the way to the server. */
const SOCKET = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
/** node-postgres and pg-pool say these in words only. */
const MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|not queryable|Client was closed|Connection ended/i;

/** How long a client is asked to wait before retrying while the database is away (seconds). */
export const DATABASE_RETRY_AFTER_S = 2;

/**
 * Whether an error means the database is unreachable (for now), as opposed to a query that is
 * wrong. Such a failure is an outage of the request (HTTP 503 with Retry-After), never a crash,
 * and background work backs off and tries again.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (SQLSTATES.has(code) || SOCKET.has(code))) return true;
    if (MESSAGES.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some(isDatabaseUnavailable)) return true;
  }
  return false;
}
