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

/**
 * LISTEN on a connection of its own, outside the pool (a pooled connection would be handed to
 * other work). When it drops, notifications sent meanwhile are lost: the handler hears `lost`,
 * then `ready` once listening again (tried every second).
 */
export function listenPostgres(url: string): Listen {
  return async (channel, handler) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad channel name ${channel}`);
    let closed = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      const c = new pg.Client({ connectionString: url });
      c.on('notification', (n) => {
        if (n.channel === channel) handler.message(n.payload ?? '');
      });
      const lost = () => {
        if (client !== c) return;
        client = undefined;
        handler.lost();
        if (!closed) {
          timer = setTimeout(() => void connect().catch(lost), RECONNECT_MS);
          timer.unref();
        }
      };
      c.on('error', lost);
      c.on('end', lost);
      client = c;
      await c.connect();
      await c.query(`LISTEN ${channel}`);
      handler.ready();
    };
    await connect();
    return async () => {
      closed = true;
      clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => {});
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
