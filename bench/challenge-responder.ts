// The clients' side of validation for bench:acme, in a process of its own so the busy load
// generator never delays an answer: a DNS server that resolves every name to 127.0.0.1 (and has
// no CAA records, so CAA checks climb to the root), and an http-01 server. Both are stateless per
// flow: bench names are `w<worker>-<n>.<zone>`, and the key authorization of any token is
// `<token>.<thumbprint of that worker's account>`, so a flow sends this process nothing.
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';

import dnsPacket from 'dns-packet';

export type ResponderMessage = { thumbprints: string[] };
export type ResponderReady = { dnsAddress: string; httpPort: number };

let thumbprints: string[] = [];

const http = createServer((req, res) => {
  const worker = /^w(\d+)-/.exec(req.headers.host ?? '')?.[1];
  const token = req.url?.split('/').pop() ?? '';
  const thumbprint = worker === undefined ? undefined : thumbprints[Number(worker)];
  if (thumbprint === undefined || !req.url?.startsWith('/.well-known/acme-challenge/')) res.writeHead(404).end();
  else res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(`${token}.${thumbprint}`);
});
const httpPort = await new Promise<number>((resolve) =>
  http.listen(0, '127.0.0.1', () => resolve((http.address() as { port: number }).port)),
);

const udp = createSocket('udp4');
udp.on('message', (msg, peer) => {
  let query;
  try {
    query = dnsPacket.decode(msg);
  } catch {
    return;
  }
  const q = query.questions?.[0];
  const answers = q?.type === 'A' ? [{ type: 'A' as const, name: q.name, ttl: 300, data: '127.0.0.1' }] : [];
  const reply = dnsPacket.encode({
    type: 'response',
    id: query.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: query.questions,
    answers,
    // Like a real zone's NODATA answer: the SOA, whose minimum says how long it may be kept (RFC 2308).
    authorities:
      answers.length === 0 && q
        ? [
            {
              type: 'SOA' as const,
              name: 'bench.test',
              ttl: 300,
              data: {
                mname: 'ns.bench.test',
                rname: 'hostmaster.bench.test',
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum: 300,
              },
            },
          ]
        : [],
  });
  udp.send(reply, peer.port, peer.address);
});
const dnsPort = await new Promise<number>((resolve) => udp.bind(0, '127.0.0.1', () => resolve(udp.address().port)));

process.on('message', (m: ResponderMessage) => {
  thumbprints = m.thumbprints;
  process.send!('ok');
});
process.on('disconnect', () => {
  http.close();
  udp.close();
});
process.send!({ dnsAddress: `127.0.0.1:${dnsPort}`, httpPort } satisfies ResponderReady);
