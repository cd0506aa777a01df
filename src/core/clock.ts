/** Time, injected everywhere it matters so tests and replicas agree on one notion of now. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export function addMs(d: Date, ms: number): Date {
  return new Date(d.getTime() + ms);
}
