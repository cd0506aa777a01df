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

/**
 * One value per distinct list of keys, compared by identity: a statement compiled once per
 * process for each list of parts it was assembled from. Keys must be few and long-lived (module
 * constants): each distinct list is kept forever.
 */
class ShapeCache<K, V> {
  private readonly root: ShapeNode<K, V> = {};

  get(keys: readonly K[], make: () => V): V {
    let node = this.root;
    for (const key of keys) {
      node.next ??= new Map();
      let next = node.next.get(key);
      if (!next) node.next.set(key, (next = {}));
      node = next;
    }
    return (node.value ??= { value: make() }).value;
  }
}

interface ShapeNode<K, V> {
  next?: Map<K, ShapeNode<K, V>>;
  value?: { value: V };
}

/** A part of a statement from another module: what shapes its SQL (compared by identity) and its values. */
export interface Part<K> {
  readonly key: K;
  readonly values: readonly unknown[];
}

/**
 * `precompiled` for a statement assembled from parts that other modules contribute: compiled once
 * per process for each distinct list of part keys. `build` gets each part's key with stand-ins for
 * its values (as many as that list's first run gave), and stand-ins for its own parameters.
 */
export function precompiledByParts<K, P extends unknown[], R>(
  build: (db: Executor, parts: readonly { key: K; standIns: unknown[] }[], ...params: P) => CompiledQuery<R>,
): (db: Executor, parts: readonly Part<K>[], ...params: P) => Promise<R[]> {
  const statements = new ShapeCache<K, { arities: number[]; run: Run<R> }>();
  return async (db, parts, ...params) => {
    const statement = statements.get(
      parts.map((p) => p.key),
      () => {
        const keys = parts.map((p) => p.key);
        const arities = parts.map((p) => p.values.length);
        const run = precompiled((db, ...standIns: unknown[]) => {
          let at = 0;
          const built = keys.map((key, i) => ({ key, standIns: standIns.slice(at, (at += arities[i]!)) }));
          return build(db, built, ...(standIns.slice(at) as P));
        });
        return { arities, run };
      },
    );
    const values: unknown[] = [];
    parts.forEach((p, i) => {
      // The stand-ins were laid out by the first run's counts; another count would shift them.
      if (p.values.length !== statement.arities[i])
        throw new Error(`a part was given ${p.values.length} values, not ${statement.arities[i]}`);
      values.push(...p.values);
    });
    values.push(...params);
    return statement.run(db, ...values);
  };
}

type Run<R> = (db: Executor, ...params: unknown[]) => Promise<R[]>;
