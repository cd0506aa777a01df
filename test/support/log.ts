import { type Logger, pino } from 'pino';

export interface CapturedLog {
  logger: Logger;
  /** Every line written so far, parsed. */
  lines: Record<string, unknown>[];
  /** The raw text, to check that nothing secret was written. */
  text(): string;
  withMessage(msg: string): Record<string, unknown>[];
}

/** A logger writing JSON lines into memory, as `keyward serve` writes them to stdout. */
export function captureLog(level = 'info'): CapturedLog {
  const raw: string[] = [];
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level, base: { service: 'keyward' } },
    {
      write: (line: string) => {
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  return { logger, lines, text: () => raw.join(''), withMessage: (msg) => lines.filter((l) => l.msg === msg) };
}
