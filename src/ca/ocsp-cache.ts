/** What the cache needs of an answer: when it stops being current. */
interface Expiring {
  nextUpdate: Date;
}

interface Entry<A> {
  serial: string;
  answer: A;
  /** Milliseconds since the epoch after which the entry is read again from the database. */
  until: number;
}

/**
 * Pre-signed OCSP answers kept in process memory, keyed by the request's bytes, so a repeated
 * lookup costs neither a parse nor a query. Bounded (oldest entries go first), and no entry
 * outlives `maxAgeMs` or its answer's nextUpdate. A revocation drops the certificate's entries on
 * every replica (see OcspResponder.follow); if that signal may have been missed, everything goes.
 */
export class OcspCache<A extends Expiring> {
  private readonly entries = new Map<string, Entry<A>>();
  /** Bumped by every drop, so an answer read from the database before a drop is not kept after it. */
  generation = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
  ) {}

  get(key: string, now: number): A | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (now >= e.until) {
      this.entries.delete(key);
      return undefined;
    }
    return e.answer;
  }

  /** Keeps `answer` unless something was dropped since `generation` was read (before the lookup). */
  set(key: string, serial: string, answer: A, now: number, generation: number): void {
    if (generation !== this.generation) return;
    const until = Math.min(now + this.maxAgeMs, answer.nextUpdate.getTime());
    if (until <= now) return;
    if (this.entries.size >= this.maxEntries && !this.entries.has(key))
      this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { serial, answer, until });
  }

  /** Drops every answer about `serial` (any CertID hash, GET or POST encoding). */
  forget(serial: string): void {
    this.generation++;
    for (const [key, e] of this.entries) if (e.serial === serial) this.entries.delete(key);
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
