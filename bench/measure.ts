import { performance } from 'node:perf_hooks';

export interface MeasureOptions {
  /** Timed duration; default 2 s. */
  seconds?: number;
  /** Untimed warm-up (JIT, caches, connection pools); default 0.3 s. */
  warmupSeconds?: number;
  /** Operations kept in flight at once (for I/O-bound rows such as database round trips); default 1. */
  concurrency?: number;
}

export interface Measurement {
  name: string;
  ops: number;
  seconds: number;
  opsPerSecond: number;
  /** Mean wall time per operation seen by one caller, in microseconds. */
  meanMicros: number;
  concurrency: number;
}

type Operation = () => unknown;

async function runFor(fn: Operation, seconds: number, concurrency: number): Promise<{ ops: number; elapsed: number }> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let ops = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const r = fn();
      // Awaiting only real promises keeps synchronous rows (raw crypto) free of microtask overhead.
      if (r instanceof Promise) await r;
      ops++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ops, elapsed: (performance.now() - start) / 1000 };
}

/** Runs `fn` repeatedly for a fixed time and reports its rate. */
export async function measure(name: string, fn: Operation, opts: MeasureOptions = {}): Promise<Measurement> {
  const seconds = opts.seconds ?? 2;
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
  await runFor(fn, opts.warmupSeconds ?? 0.3, concurrency);
  const { ops, elapsed } = await runFor(fn, seconds, concurrency);
  const opsPerSecond = ops / elapsed;
  return { name, ops, seconds: elapsed, opsPerSecond, meanMicros: (elapsed * 1e6 * concurrency) / ops, concurrency };
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** A fixed-width table; `relativeTo` adds a column of rates relative to that row. */
export function formatTable(rows: readonly Measurement[], relativeTo?: string): string {
  const base = rows.find((r) => r.name === relativeTo);
  const header = ['benchmark', 'ops/s', 'µs/op', 'conc', ...(base ? [`× ${base.name}`] : [])];
  const body = rows.map((r) => [
    r.name,
    fmt(r.opsPerSecond),
    fmt(r.meanMicros, 1),
    String(r.concurrency),
    ...(base ? [fmt(r.opsPerSecond / base.opsPerSecond, 2)] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}
