/** Time for the ACME layer; injected so tests and replicas agree on one notion of now. */
export interface AcmeClock {
  now(): Date;
}

export const systemClock: AcmeClock = { now: () => new Date() };

export function addMs(d: Date, ms: number): Date {
  return new Date(d.getTime() + ms);
}
