/**
 * Counts what this process asks of PostgreSQL: statements sent, and commits that wrote (an
 * autocommitted write statement, or the COMMIT of a transaction that wrote). Benchmarks read them
 * to report statements and commits per operation; they cost two increments per query.
 */
export interface StatementStats {
  statements: number;
  commits: number;
  /** Commits that waited for PostgreSQL to flush the WAL (all but those with synchronous_commit off). */
  flushedCommits: number;
  /** Statements by SQL text (the first 200 distinct texts), for `BENCH_STATEMENTS=1 npm run bench:acme`. */
  byText: Record<string, number>;
}

export const statementStats: StatementStats = {
  statements: 0,
  commits: 0,
  flushedCommits: 0,
  byText: Object.create(null) as Record<string, number>,
};
const MAX_TEXTS = 200;
let texts = 0;

const WRITE = /\b(insert|update|delete)\b/i;
const TX = /^\s*(begin|start transaction|commit|rollback|savepoint|release)/i;

type Kind = 'begin' | 'commit' | 'rollback' | 'write' | 'other';
/** What a statement text is, worked out once per text (the texts are few and long). */
const kinds = new Map<string, Kind>();
function kindOf(text: string): Kind {
  let kind = kinds.get(text);
  if (kind === undefined) {
    const tx = TX.exec(text)?.[1]?.toLowerCase();
    kind =
      tx === 'begin' || tx === 'start transaction'
        ? 'begin'
        : tx === 'commit' || tx === 'rollback'
          ? tx
          : tx === undefined && WRITE.test(text)
            ? 'write'
            : 'other';
    if (kinds.size < MAX_TEXTS * 5) kinds.set(text, kind);
  }
  return kind;
}

/** Per connection: whether the open transaction (if any) has written. */
export class ConnectionCounter {
  private inTransaction = false;
  private wrote = false;

  constructor(private readonly flushes = true) {}

  private commit(): void {
    statementStats.commits++;
    if (this.flushes) statementStats.flushedCommits++;
  }

  count(text: string): void {
    statementStats.statements++;
    const seen = statementStats.byText[text];
    if (seen !== undefined) statementStats.byText[text] = seen + 1;
    else if (texts < MAX_TEXTS) {
      texts++;
      statementStats.byText[text] = 1;
    }
    const kind = kindOf(text);
    switch (kind) {
      case 'begin':
        this.inTransaction = true;
        this.wrote = false;
        break;
      case 'commit':
      case 'rollback':
        if (kind === 'commit' && this.wrote) this.commit();
        this.inTransaction = false;
        this.wrote = false;
        break;
      case 'write':
        if (this.inTransaction) this.wrote = true;
        else this.commit();
        break;
    }
  }
}

/** When this process was forked with an IPC channel (a benchmark), answer `statement-stats` requests. */
export function answerStatementStatsOverIpc(): void {
  if (!process.send) return;
  // The channel must not keep a server that was told to stop alive.
  process.channel?.unref();
  process.on('message', (m: unknown) => {
    if (m === 'statement-stats') process.send?.({ statementStats });
  });
}
