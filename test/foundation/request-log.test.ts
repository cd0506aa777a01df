import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';

import { Hono } from 'hono';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { createLogger, flushLog, requestLine, requestLog } from '../../src/http/log.ts';

describe('request log', () => {
  it('logs requests at info, but health probes only at debug (unless they fail)', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    let healthy = true;
    const app = new Hono();
    app.use(requestLog(pino({ level: 'info' }, sink), 'http'));
    app.get('/health', (c) => c.json({}, healthy ? 200 : 503));
    app.get('/roots.pem', (c) => c.text('pem'));
    await app.request('/health');
    await app.request('/roots.pem');
    healthy = false;
    await app.request('/health');
    expect(lines.map((l) => [l.path, l.status])).toEqual([
      ['/roots.pem', 200],
      ['/health', 503],
    ]);
  });
});

describe('the buffered log destination', () => {
  const sink = () => {
    const writes: string[] = [];
    return {
      writes,
      write: (text: string) => writes.push(text),
      lines: () => writes.join('').split('\n').filter(Boolean),
    };
  };

  it('writes request lines (method, path, status) 16 KiB at a time, and everything on flush', () => {
    const out = sink();
    const log = createLogger('info', out);
    const line = requestLine(log, 'http');
    line('GET', '/ocsp/MEMwQTA%2FMD0wOzAJBgUrDgMCGgUABBQ', 200, 0);
    line('POST', '/acme/new-order', 201, 3);
    // Held, not one write per line.
    expect(out.writes).toEqual([]);
    flushLog(log);
    expect(out.writes).toHaveLength(1);
    expect(out.lines().map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      expect.objectContaining({
        listener: 'http',
        method: 'GET',
        path: '/ocsp/MEMwQTA%2FMD0wOzAJBgUrDgMCGgUABBQ',
        status: 200,
        msg: 'request',
      }),
      expect.objectContaining({
        listener: 'http',
        method: 'POST',
        path: '/acme/new-order',
        status: 201,
        msg: 'request',
      }),
    ]);
    // Past the buffer's size it writes without being asked, in order, and loses nothing.
    for (let i = 0; i < 400; i++) line('GET', `/crl/${i}.crl`, 200, 0);
    expect(out.writes.length).toBeGreaterThan(1);
    flushLog(log);
    const paths = out.lines().map((l) => (JSON.parse(l) as { path: string }).path);
    expect(paths.slice(2)).toEqual(Array.from({ length: 400 }, (_, i) => `/crl/${i}.crl`));
  });

  it('writes held lines on its own within a fraction of a second', async () => {
    const out = sink();
    const log = createLogger('info', out);
    requestLine(log, 'http')('GET', '/roots.pem', 200, 0);
    await expect.poll(() => out.lines().length, { timeout: 5_000 }).toBe(1);
  });

  it('writes what it holds when the process exits, also on an uncaught exception, before later stdout', () => {
    const script = `
      import { createLogger, flushLog, requestLine } from ${JSON.stringify(new URL('../../src/http/log.ts', import.meta.url).pathname)};
      const log = createLogger('info');
      requestLine(log, 'http')('GET', '/first', 200, 0);
      flushLog(log);
      process.stdout.write('banner\\n');
      requestLine(log, 'http')('GET', '/last', 503, 1);
      if (process.argv[1] === 'throw') throw new Error('boom');
      process.exit(0);
    `;
    for (const mode of ['exit', 'throw']) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, mode], {
        encoding: 'utf8',
      });
      expect(r.status).toBe(mode === 'exit' ? 0 : 1);
      const lines = r.stdout.trim().split('\n');
      expect(lines[1]).toBe('banner');
      expect([lines[0], lines[2]].map((l) => JSON.parse(l!) as Record<string, unknown>)).toEqual([
        expect.objectContaining({ path: '/first', status: 200, msg: 'request' }),
        expect.objectContaining({ path: '/last', status: 503, msg: 'request' }),
      ]);
    }
  });
});
