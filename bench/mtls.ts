// Mesh issuance throughput over real HTTPS: bootstrap token → certificate, and mTLS renewals.
// A CA serves in this process (embedded PGlite, or BENCH_DATABASE_URL); clients are in-process.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { stringify } from 'yaml';

import { commandsByName } from '../src/cli/registry.ts';
import { loadConfig } from '../src/config/load.ts';
import { openContext } from '../src/context.ts';
import { createLogger } from '../src/http/log.ts';
import { newKeyAndCsr } from '../src/mesh/csr-client.ts';
import { createBootstrapToken } from '../src/mesh/tokens.ts';
import { startServer } from '../src/server.ts';
import { formatTable, measure } from './measure.ts';

const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 4);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

function post(
  url: string,
  body: unknown,
  tls: { ca: string; key?: string; cert?: string },
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    // A new TLS connection per request, as agents make them.
    const req = request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' }, ...tls, agent: false },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(JSON.parse(text) as Record<string, unknown>)
            : reject(new Error(`${res.statusCode} ${text}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const dataDir = mkdtempSync(join(tmpdir(), 'kw-bench-mtls-'));
const configFile = join(dataDir, 'keyward.yaml');
writeFileSync(
  configFile,
  stringify({
    https: { listen: `127.0.0.1:${await freePort()}`, hostnames: ['localhost'] },
    http: { listen: `127.0.0.1:${await freePort()}` },
    profilesDir: join(process.cwd(), 'ca-config', 'profiles'),
    log: { level: 'silent' },
  }),
);
const config = loadConfig({ configFile, dataDir, env: { DATABASE_URL: process.env.BENCH_DATABASE_URL ?? '' } });
const ctx = await openContext(config, { principal: 'bench' });
const init = await ctx.ca.init(
  { organization: 'Bench', root: config.ca.root, intermediate: config.ca.intermediate },
  'bench',
);
const server = await startServer(ctx, createLogger('silent'), commandsByName);
const { toPem } = await import('../src/ca/pem.ts');
const ca = toPem(init.root.certificate);
const deps = { config, db: ctx.database.db, kms: ctx.kms, issuance: ctx.issuance };

try {
  // Client key generation is the client's cost; a pool of CSRs keeps it out of the server figures.
  const csrs = await Promise.all(Array.from({ length: 16 }, () => newKeyAndCsr()));
  let i = 0;
  const tokenToCert = await measure(
    'token create + POST /v1/sign',
    async () => {
      const csr = csrs[i++ % csrs.length]!;
      const { token } = await createBootstrapToken(deps, {
        id: `spiffe://bench.example/ns/b/sa/s${i}`,
        profile: 'shortlived',
        principal: 'bench',
      });
      await post(`${server.httpsUrl}/v1/sign`, { csr: csr.csrPem, token }, { ca });
    },
    { seconds, concurrency },
  );

  const owner = csrs[0]!;
  const { token } = await createBootstrapToken(deps, {
    id: 'spiffe://bench.example/ns/b/sa/renewer',
    profile: 'shortlived',
    principal: 'bench',
  });
  const issued = await post(`${server.httpsUrl}/v1/sign`, { csr: owner.csrPem, token }, { ca });
  let j = 0;
  const renewals = await measure(
    'POST /v1/renew (mTLS, new connection)',
    async () => {
      await post(
        `${server.httpsUrl}/v1/renew`,
        { csr: csrs[j++ % csrs.length]!.csrPem },
        { ca, key: owner.keyPem, cert: String(issued.certificate) },
      );
    },
    { seconds, concurrency },
  );
  const keygen = await measure('client: P-256 key + CSR (agent side)', () => newKeyAndCsr(), { seconds: 1 });
  process.stdout.write(
    `Mesh issuance, ${ctx.database.kind} database, ${seconds}s per row\n\n${formatTable([tokenToCert, renewals, keygen])}\n`,
  );
} finally {
  await server.close();
  await ctx.close();
  rmSync(dataDir, { recursive: true, force: true });
}
