import type { Config } from '../config/load.ts';
import { openContext } from '../context.ts';
import { answerStatementStatsOverIpc } from '../db/statement-stats.ts';
import { createLogger } from '../http/log.ts';
import { type RunningServer, startServer } from '../server.ts';
import { initCommand, type InitOutput } from './ca-commands.ts';

/** `keyward serve`: initialise on first run, serve, and shut down cleanly on SIGTERM/SIGINT. */
export async function serve(config: Config, json: boolean): Promise<void> {
  const log = createLogger(config.log.level);
  const ctx = await openContext(config, { principal: 'keyward:serve' });
  let server: RunningServer;
  try {
    const init = (await initCommand.run(ctx, { principal: 'keyward:serve' })) as InitOutput;
    server = await startServer(ctx, log);
    answerStatementStatsOverIpc();
    const banner = {
      created: init.created,
      https: server.httpsUrl,
      http: server.httpUrl,
      roots: `${server.httpUrl}/roots.pem`,
      rootFingerprint: init.root.sha256Fingerprint,
      database: ctx.database.kind,
      dataDir: config.dataDir,
    };
    process.stdout.write(
      json
        ? JSON.stringify(banner) + '\n'
        : `Keyward is running${init.created ? ' (new CA created)' : ''}.
  HTTPS API        ${server.httpsUrl}
  HTTP             ${server.httpUrl}
  Root certificate ${server.httpUrl}/roots.pem
  Root SHA-256     ${init.root.sha256Fingerprint}
  Database         ${ctx.database.kind === 'embedded' ? `embedded (${config.dataDir}/pg)` : 'PostgreSQL'}
Press Ctrl-C to stop.
`,
    );
  } catch (err) {
    await ctx.close();
    throw err;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      void server
        .close()
        .then(() => ctx.close())
        .then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
