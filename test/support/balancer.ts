import { connect, createServer, type Server, type Socket } from 'node:net';

/** A TCP round-robin balancer: each connection goes to the next replica (TLS passes through). */
export async function roundRobin(port: number, backends: number[]): Promise<{ server: Server; hits: number[] }> {
  const hits = backends.map(() => 0);
  let next = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const i = next++ % backends.length;
    hits[i]!++;
    const upstream = connect(backends[i]!, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  server.on('close', () => sockets.forEach((s) => s.destroy()));
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, hits };
}

export const portOf = (url: string) => Number(new URL(url).port);
