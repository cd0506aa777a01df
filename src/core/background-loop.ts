/** What a loop needs from a logger (pino's signature). */
export interface LoopLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface LoopOptions {
  /** Names the loop in log lines. */
  name: string;
  /** Pause after a successful run. */
  intervalMs: number;
  /**
   * One run. Resolve `true` when there is more work waiting, to run again at once (a batch that
   * filled up). A rejection counts as a failure and backs off.
   */
  run: () => Promise<boolean | void>;
  log: LoopLogger;
  /** First pause after a failure; it doubles with each failure in a row. Default min(intervalMs, 1 s). */
  minBackoffMs?: number;
  /** Longest pause after failures. Default max(intervalMs, 30 s). */
  maxBackoffMs?: number;
  /** Run once at start instead of after the first interval. Default true. */
  runAtStart?: boolean;
}

export interface BackgroundLoop {
  /** Runs as soon as the current run (if any) ends, instead of waiting out the pause. */
  kick(): void;
  /** Stops scheduling and waits for a run in progress. */
  stop(): Promise<void>;
}

/** The pause after `failures` failures in a row: exponential, capped, with ±20 % jitter. */
export function backoffDelay(failures: number, minMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/**
 * The one shape of background work in this code base (janitors, publishers, refreshers, job
 * pollers): run, pause, run again; on failure back off exponentially (so a database outage costs
 * a log line per back-off step, not a tight loop of errors) and say when work resumed. One run at
 * a time; nothing keeps the process alive (timers are unref'd).
 */
export function startLoop(opts: LoopOptions): BackgroundLoop {
  const minBackoff = opts.minBackoffMs ?? Math.min(opts.intervalMs, 1_000);
  const maxBackoff = opts.maxBackoffMs ?? Math.max(opts.intervalMs, 30_000);
  let stopped = false;
  let failures = 0;
  let firstFailure = 0;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> | undefined;
  let kicked = false;

  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(tick, ms);
    timer.unref();
  };

  const once = async (): Promise<number> => {
    try {
      const more = await opts.run();
      if (failures > 0) {
        opts.log.info(
          { loop: opts.name, failures, downMs: Date.now() - firstFailure },
          `${opts.name} resumed after ${failures} failed run(s)`,
        );
      }
      failures = 0;
      return more === true ? 0 : opts.intervalMs;
    } catch (err) {
      failures++;
      if (failures === 1) firstFailure = Date.now();
      const delay = backoffDelay(failures, minBackoff, maxBackoff);
      opts.log.warn(
        { loop: opts.name, failures, retryInMs: delay, err: err instanceof Error ? err.message : String(err) },
        `${opts.name} failed; backing off`,
      );
      return delay;
    }
  };

  function tick(): void {
    timer = undefined;
    if (stopped) return;
    kicked = false;
    current = once().then((delay) => {
      current = undefined;
      schedule(kicked ? 0 : delay);
    });
  }

  if (opts.runAtStart === false) schedule(opts.intervalMs);
  else tick();

  return {
    kick: () => {
      // While backing off, new work waits too: the failure is not the work's, it is ours.
      if (stopped || failures > 0) return;
      if (current) {
        kicked = true;
        return;
      }
      clearTimeout(timer);
      schedule(0);
    },
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await current;
    },
  };
}
