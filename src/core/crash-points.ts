/**
 * Named points where a test build may kill the process (SIGKILL, as `kill -9` would), so that each
 * step of an operation can be crashed at deterministically and recovery checked from each. Armed
 * only by the configuration loader from KEYWARD_TEST_CRASH_AT; unarmed, a point costs a comparison.
 */
export type CrashPoint =
  /** finalize: the request is decided; nothing is written yet (the order is still ready). */
  | 'finalize-decided'
  /** issuance: the serial and request are recorded with the key use's audit event (for ACME, with the order turning processing); nothing signed yet. */
  | 'serial-reserved'
  /** issuance: the certificate is signed but not stored. */
  | 'certificate-signed'
  /** issuance: the certificate is stored (with the order, for ACME); no answer sent yet. */
  | 'certificate-stored';

export const CRASH_POINTS: readonly CrashPoint[] = [
  'finalize-decided',
  'serial-reserved',
  'certificate-signed',
  'certificate-stored',
];

let armed: { point: CrashPoint; requester: string } | undefined;

/**
 * `<point>` or `<point>/<requester prefix>`: the latter only for issuance whose requester starts
 * with the prefix (e.g. `certificate-signed/acme:`, so the server's own TLS certificate, issued at
 * every start, does not trip it).
 */
export function armCrashPoint(spec: string | undefined): void {
  if (spec === undefined || spec === '') {
    armed = undefined;
    return;
  }
  const slash = spec.indexOf('/');
  const point = (slash < 0 ? spec : spec.slice(0, slash)) as CrashPoint;
  if (!CRASH_POINTS.includes(point))
    throw new Error(`KEYWARD_TEST_CRASH_AT: unknown crash point ${point} (known: ${CRASH_POINTS.join(', ')})`);
  armed = { point, requester: slash < 0 ? '' : spec.slice(slash + 1) };
}

export function crashPoint(point: CrashPoint, requester = ''): void {
  if (armed?.point === point && requester.startsWith(armed.requester)) process.kill(process.pid, 'SIGKILL');
}
