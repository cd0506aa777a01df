// A load generator for small HTTP/1.1 GETs over loopback, as light as we can make it in Node, so
// that on a 2-core machine it leaves the server its core: raw keep-alive sockets, each request's
// bytes built once, and a response reader that looks at the status, Content-Length and nothing
// else (autocannon's approach). fetch costs several times what a cached OCSP answer costs the
// server, undici's Pool about as much as the answer.
//
// Run as a child process (`fork`): it takes its settings from the environment and sends its result
// to the parent. Settings: BENCH_URLS (JSON array of URLs on one origin), BENCH_SECONDS,
// BENCH_CONCURRENCY (connections), BENCH_PIPELINE (requests in flight per connection; 1 is what
// an OCSP client does), BENCH_DRIVER=undici (undici's Pool instead, for comparison).
import { connect, type Socket } from 'node:net';

export interface LoadResult {
  /** 200 answers with a body of more than `minBody` bytes. */
  ok: number;
  /** Anything else, and connections that failed. */
  bad: number;
  elapsed: number;
  p50: string;
  p99: string;
  /** The load generator's own CPU (user + system) during the run, in seconds. */
  cpu: number;
}

export interface LoadOptions {
  urls: string[];
  seconds: number;
  connections: number;
  pipeline: number;
  /** A 200 whose body is not longer than this counts as bad. */
  minBody: number;
  /** `raw` (the default) or `undici` (its Pool, for comparison: what this bench used before). */
  driver?: 'raw' | 'undici';
}

const CRLF2 = Buffer.from('\r\n\r\n');

/** Content-Length of a response head (latin1), or -1 when absent. */
function contentLength(head: string): number {
  const i = head.search(/\r\ncontent-length:/i);
  if (i < 0) return -1;
  return parseInt(head.slice(i + 17), 10);
}

async function runUndici(options: LoadOptions): Promise<LoadResult> {
  const { Pool } = await import('undici');
  const urls = options.urls.map((u) => new URL(u));
  const pool = new Pool(urls[0]!.origin, { connections: options.connections, pipelining: options.pipeline });
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const deadline = start + options.seconds * 1000;
  let ok = 0;
  let bad = 0;
  const latencies: number[] = [];
  const worker = async (w: number) => {
    for (let i = w; performance.now() < deadline; i++) {
      const t = performance.now();
      const res = await pool.request({ method: 'GET', path: urls[i % urls.length]!.pathname });
      const body = new Uint8Array(await res.body.arrayBuffer());
      if (res.statusCode === 200 && body.length > options.minBody) ok++;
      else bad++;
      if ((i & 15) === 0) latencies.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: options.connections * options.pipeline }, (_, w) => worker(w)));
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  await pool.close();
  return { ok, bad, elapsed, ...percentiles(latencies), cpu: (cpu.user + cpu.system) / 1e6 };
}

function percentiles(latencies: number[]): { p50: string; p99: string } {
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies.length === 0
      ? '-'
      : latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!.toFixed(2);
  return { p50: pct(0.5), p99: pct(0.99) };
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  if (options.driver === 'undici') return runUndici(options);
  const parsed = options.urls.map((u) => new URL(u));
  const origin = parsed[0]!;
  const requests = parsed.map((u) =>
    Buffer.from(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${origin.host}\r\n\r\n`, 'latin1'),
  );
  let ok = 0;
  let bad = 0;
  let stopping = false;
  const latencies: number[] = [];

  const connection = (w: number) =>
    new Promise<void>((resolve) => {
      const socket: Socket = connect(Number(origin.port), origin.hostname);
      socket.setNoDelay(true);
      let next = w;
      let inFlight = 0;
      // Send times of the requests in flight, oldest first (answers come back in order).
      const sent: number[] = [];
      let pending: Buffer | undefined;
      let bodyLeft = -1;
      let status = 0;
      let bodyLength = 0;
      const done = () => {
        socket.destroy();
        resolve();
      };
      const fill = () => {
        if (stopping) {
          if (inFlight === 0) done();
          return;
        }
        if (inFlight >= options.pipeline) return;
        const now = (next & 15) === 0 ? performance.now() : 0;
        if (options.pipeline === 1) {
          socket.write(requests[next++ % requests.length]!);
          sent.push(now);
          inFlight++;
          return;
        }
        const batch: Buffer[] = [];
        while (inFlight < options.pipeline) {
          batch.push(requests[next++ % requests.length]!);
          sent.push(now);
          inFlight++;
        }
        socket.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
      };
      socket.on('connect', fill);
      socket.on('data', (chunk: Buffer) => {
        let buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
        for (;;) {
          if (bodyLeft < 0) {
            const end = buf.indexOf(CRLF2);
            if (end < 0) break;
            status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
            bodyLength = contentLength(buf.toString('latin1', 0, end));
            if (bodyLength < 0) {
              // The bench's server always sends Content-Length; anything else is a failure.
              bad++;
              done();
              return;
            }
            bodyLeft = bodyLength;
            buf = buf.subarray(end + 4);
          }
          if (buf.length < bodyLeft) {
            bodyLeft -= buf.length;
            buf = buf.subarray(buf.length);
            break;
          }
          buf = buf.subarray(bodyLeft);
          bodyLeft = -1;
          if (status === 200 && bodyLength > options.minBody) ok++;
          else bad++;
          inFlight--;
          const t = sent.shift()!;
          if (t !== 0) latencies.push(performance.now() - t);
        }
        pending = buf.length === 0 ? undefined : buf;
        fill();
      });
      socket.on('error', () => {
        bad++;
        resolve();
      });
      socket.on('close', () => resolve());
    });

  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const timer = setTimeout(() => (stopping = true), options.seconds * 1000);
  await Promise.all(Array.from({ length: options.connections }, (_, w) => connection(w)));
  clearTimeout(timer);
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return { ok, bad, elapsed, ...percentiles(latencies), cpu: (cpu.user + cpu.system) / 1e6 };
}

if (process.send !== undefined && process.env.BENCH_URLS !== undefined) {
  const result = await runLoad({
    urls: JSON.parse(process.env.BENCH_URLS) as string[],
    seconds: Number(process.env.BENCH_SECONDS ?? 5),
    connections: Number(process.env.BENCH_CONCURRENCY ?? 32),
    pipeline: Number(process.env.BENCH_PIPELINE ?? 1),
    minBody: Number(process.env.BENCH_MIN_BODY ?? 0),
    driver: process.env.BENCH_DRIVER === 'undici' ? 'undici' : 'raw',
  });
  process.send(result, () => process.exit(0));
}
