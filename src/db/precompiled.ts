import { CompiledQuery } from 'kysely';

import type { Executor } from './schema.ts';

const PARAMETER = Symbol('precompiled parameter');

interface StandIn {
  readonly [PARAMETER]: number;
}

const positionOf = (value: unknown): number | undefined =>
  typeof value === 'object' && value !== null && PARAMETER in value ? (value as StandIn)[PARAMETER] : undefined;

/**
 * A statement whose text never changes, built and compiled by kysely once per process. `build`
 * is given stand-ins for the parameters and returns the compiled query; each run then sends that
 * text with the run's values in the stand-ins' places. Building and compiling a query with
 * subqueries costs kysely 50–150 µs here, several times a certificate on the ACME hot path; the
 * text is the same every time either way, so PostgreSQL's prepared plan is reused as before.
 *
 * `build` must not look at its parameters (they are stand-ins) nor at anything but constants:
 * every value that varies must be a parameter. Other values kysely sends as parameters (the
 * 'ready' of `.where('status', '=', 'ready')`) are constants of the text and go as compiled.
 */
export function precompiled<P extends unknown[], R>(
  build: (db: Executor, ...params: P) => CompiledQuery<R>,
): (db: Executor, ...params: P) => Promise<R[]> {
  // Each compiled parameter: the position of the run's value to send, or the constant to send.
  let compiled: { sql: string; values: ({ position: number } | { constant: unknown })[] } | undefined;
  return async (db, ...params) => {
    if (compiled === undefined) {
      const standIns = params.map((_, i): StandIn => ({ [PARAMETER]: i }));
      const query = build(db, ...(standIns as P));
      compiled = {
        sql: query.sql,
        values: query.parameters.map((value) => {
          const position = positionOf(value);
          return position === undefined ? { constant: value } : { position };
        }),
      };
    }
    const sent = compiled.values.map((v) => ('position' in v ? params[v.position] : v.constant));
    const { rows } = await db.executeQuery<R>(CompiledQuery.raw(compiled.sql, sent));
    return rows;
  };
}
