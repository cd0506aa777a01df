import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';

/**
 * Receives NOTIFY payloads on one channel. Between `lost` and the next `ready` messages may be
 * missed, so whatever they keep true must not be trusted in that time.
 */
export interface NotificationHandler {
  message(payload: string): void;
  /** Listening from now on: anything sent earlier is already in the database. */
  ready(): void;
  lost(): void;
}

export type Listen = (channel: string, handler: NotificationHandler) => Promise<() => Promise<void>>;

const RECONNECT_MS = 1_000;
/** How the connection shows in pg_stat_activity, so an operator can tell it from the pools'. */
const APPLICATION_NAME = 'keyward-listen';

/**
 * LISTEN on one connection per replica for every channel, outside the pool (a pooled connection
 * would be handed to other work). When it drops, notifications sent meanwhile are lost: every
 * handler hears `lost`, then `ready` once listening again (tried every second).
 */
export function listenPostgres(url: string): Listen {
  const handlers = new Map<string, Set<NotificationHandler>>();
  let client: pg.Client | undefined;
  let connecting: Promise<pg.Client> | undefined;
  let timer: NodeJS.Timeout | undefined;
  // pg runs one query at a time per connection; LISTENs from concurrent callers take turns.
  let turn: Promise<unknown> = Promise.resolve();
  const inTurn = (c: pg.Client, text: string): Promise<unknown> => {
    const run = turn.then(() => c.query(text));
    turn = run.catch(() => {});
    return run;
  };
  const everyHandler = () => [...handlers.values()].flatMap((set) => [...set]);

  const lost = (c: pg.Client) => {
    if (client !== c) return;
    client = undefined;
    for (const h of everyHandler()) h.lost();
    if (handlers.size > 0) {
      timer = setTimeout(() => void reconnect(), RECONNECT_MS);
      timer.unref();
    }
  };
  const reconnect = async () => {
    try {
      await connection();
      for (const h of everyHandler()) h.ready();
    } catch {
      // lost() has scheduled the next try.
    }
  };
  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME });
    c.on('notification', (n) => {
      for (const h of handlers.get(n.channel) ?? []) h.message(n.payload ?? '');
    });
    c.on('error', () => lost(c));
    c.on('end', () => lost(c));
    client = c;
    try {
      await c.connect();
      for (const channel of handlers.keys()) await inTurn(c, `LISTEN ${channel}`);
    } catch (err) {
      lost(c);
      await c.end().catch(() => {});
      throw err;
    }
    return c;
  };
  const connection = (): Promise<pg.Client> => {
    if (client && !connecting) return Promise.resolve(client);
    connecting ??= connect().finally(() => (connecting = undefined));
    return connecting;
  };

  return async (channel, handler) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad channel name ${channel}`);
    let set = handlers.get(channel);
    if (!set) handlers.set(channel, (set = new Set()));
    set.add(handler);
    const forget = () => {
      set.delete(handler);
      if (set.size > 0) return undefined;
      handlers.delete(channel);
      return client;
    };
    try {
      // LISTEN is idempotent, and a connection made meanwhile listened to this channel already.
      await inTurn(await connection(), `LISTEN ${channel}`);
    } catch (err) {
      forget();
      if (handlers.size === 0) clearTimeout(timer);
      throw err;
    }
    handler.ready();
    return async () => {
      const c = forget();
      if (handlers.size === 0) {
        clearTimeout(timer);
        client = undefined;
        await c?.end().catch(() => {});
      } else if (c) await inTurn(c, `UNLISTEN ${channel}`).catch(() => {});
    };
  };
}

/** The embedded database runs in this process: its notifications arrive in order and never drop. */
export function listenEmbedded(pglite: PGlite): Listen {
  return async (channel, handler) => {
    const unsubscribe = await pglite.listen(channel, (payload) => handler.message(payload));
    handler.ready();
    return () => unsubscribe();
  };
}
