// The clients' side of validation for bench:acme, in a process of its own: the DNS server that
// resolves the names and the web server that answers http-01. In the load generator's process they
// would answer only when its busy event loop got round to it, and the benchmark would measure that.
import { createServer } from 'node:http';

import { startTestDnsServer } from '../test/support/dns-server.ts';

export type ResponderMessage =
  { id: number; name: string; token: string; keyAuthorization: string } | { id: number; remove: string };
export type ResponderReady = { dnsAddress: string; httpPort: number };

const dns = await startTestDnsServer();
const tokens = new Map<string, string>();
const http = createServer((req, res) => {
  const keyAuth = tokens.get(req.url?.split('/').pop() ?? '');
  res.writeHead(keyAuth ? 200 : 404).end(keyAuth ?? '');
});
const httpPort = await new Promise<number>((resolve) =>
  http.listen(0, '127.0.0.1', () => resolve((http.address() as { port: number }).port)),
);

process.on('message', (m: ResponderMessage) => {
  if ('remove' in m) tokens.delete(m.remove);
  else {
    dns.setA(m.name, '127.0.0.1');
    tokens.set(m.token, m.keyAuthorization);
  }
  process.send!({ id: m.id });
});
process.on('disconnect', () => {
  http.close();
  void dns.close();
});
process.send!({ dnsAddress: dns.address, httpPort } satisfies ResponderReady);
