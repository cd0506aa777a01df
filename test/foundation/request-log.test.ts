import { Writable } from 'node:stream';

import { Hono } from 'hono';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { requestLog } from '../../src/http/log.ts';

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
