// What metrics cost per ACME flow, measured where the cost is: the request middleware and the
// event publishes, in this process's CPU time. `npm run bench:acme` with `BENCH_SETTINGS="metrics:
// { enabled: false }"` measures the same end to end, but on a busy machine its run-to-run noise is
// larger than the effect; this one is not disturbed by the database or the load generator.
import { Hono } from 'hono';

import { events } from '../src/core/events.ts';
import { requestMetrics } from '../src/http/metrics.ts';

const N = Number(process.env.BENCH_N ?? 200_000);

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function perRequest(withMetrics: boolean): Promise<number> {
  const app = new Hono();
  if (withMetrics) app.use(requestMetrics('https'));
  app.post('/acme/order/:id/finalize', (c) => c.text('ok'));
  const req = () => app.request('/acme/order/abc123/finalize', { method: 'POST' });
  for (let i = 0; i < 5_000; i++) await req();
  const start = cpuMicros();
  for (let i = 0; i < N; i++) await req();
  return (cpuMicros() - start) / N;
}

function perPublish(): number {
  const issued = {
    serial: '1f'.repeat(16),
    issuerId: 'abcdef0123456789',
    profile: 'tls-server',
    requester: 'acme:account',
    names: ['a.example'],
    notAfter: new Date(),
    seconds: 0.01,
  };
  const start = cpuMicros();
  for (let i = 0; i < N; i++) {
    events.acmeRequest.publish({ resource: 'order/:id/finalize', problem: undefined });
    events.certificateIssued.publish(issued);
    events.keyOperation.publish({
      keyId: 'k',
      action: 'sign-certificate',
      principal: 'keyward',
      outcome: 'success',
      errorCode: null,
    });
  }
  return (cpuMicros() - start) / (3 * N);
}

const bare = await perRequest(false);
const measured = await perRequest(true);
const publish = perPublish();
// One acme-client flow (bench:acme): about 9 HTTPS requests and 12 events (an ACME outcome per
// request, a validation, an issuance, a key use and its audit).
const perFlow = 9 * (measured - bare) + 12 * publish;
console.log(`request through Hono without metrics  ${bare.toFixed(2)} µs CPU`);
console.log(`request through Hono with metrics     ${measured.toFixed(2)} µs CPU (+${(measured - bare).toFixed(2)})`);
console.log(`one event published to the metrics    ${publish.toFixed(2)} µs CPU`);
console.log(`per ACME flow (9 requests, 12 events) ${perFlow.toFixed(0)} µs CPU`);
const flowCpuMs = Number(process.env.BENCH_FLOW_CPU_MS ?? 0);
if (flowCpuMs > 0)
  console.log(`share of a flow's server CPU (${flowCpuMs} ms)    ${((perFlow / 1000 / flowCpuMs) * 100).toFixed(2)} %`);
