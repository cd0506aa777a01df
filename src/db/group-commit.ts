interface Waiter<I, O> {
  item: I;
  resolve: (out: O) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit for small writes: calls that arrive while a batch is in flight wait and go together
 * in the next one, so N concurrent callers cost one statement and one commit instead of N. A lone
 * caller goes on the event loop's next turn (setImmediate, not a timer): the requests whose bytes
 * came in the same turn share its statement too (at 8 and 32 ACME clients, 0.2–0.6 fewer
 * statements per certificate).
 */
export class GroupCommit<I, O> {
  private queue: Waiter<I, O>[] = [];
  private flushing = false;

  /** `run` gets the items in arrival order and answers one output per item, in the same order. */
  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly maxBatch = 500,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const out = await this.run(batch.map((w) => w.item));
          batch.forEach((w, i) => w.resolve(out[i]!));
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
