/**
 * CAA look-ups that report how long their answer may be kept, which node's resolver does not:
 * one UDP query (TCP when the answer is truncated), encoded and decoded by dns-packet, to the
 * resolver validation uses. The TTL of a positive answer is its records' smallest; a negative one
 * (no such name, or no CAA records) may be kept for its zone's SOA minimum (RFC 2308 §5), and only
 * when the answer carries the SOA.
 */
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { getServers } from 'node:dns';
import { isIP, Socket } from 'node:net';

import dnsPacket, { type Answer, type DecodedPacket } from 'dns-packet';

import { type CaaRecord, DnsLookupError } from './dns-lookup-error.ts';

export interface CaaAnswer {
  /** Empty for NODATA; `nxdomain` for a name that doesn't exist. */
  records: CaaRecord[];
  nxdomain: boolean;
  /** How long the answer may be kept, in seconds (0: not at all). */
  ttl: number;
}

interface Server {
  host: string;
  port: number;
}

/** `host:port`, `[v6]:port`, or a bare address (port 53); undefined: the system's first server. */
export function caaServer(spec: string | undefined): Server {
  const s = spec ?? getServers()[0] ?? '127.0.0.1';
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracketed) return { host: bracketed[1]!, port: Number(bracketed[2] ?? 53) };
  if (isIP(s) === 6) return { host: s, port: 53 };
  const [host, port] = s.split(':');
  return { host: host!, port: Number(port ?? 53) };
}

const CAA_TYPE = 'CAA' as unknown as 'A';

export async function queryCaa(server: Server, name: string, timeoutMs: number): Promise<CaaAnswer> {
  const id = randomInt(0, 0x10000);
  const query = {
    type: 'query' as const,
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: CAA_TYPE, name }],
  };
  let res = await overUdp(server, dnsPacket.encode(query), id, name, timeoutMs);
  if (res.flag_tc) res = await overTcp(server, dnsPacket.streamEncode(query), id, name, timeoutMs);
  const rcode = (res as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR';
  if (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN') {
    const kind = rcode === 'SERVFAIL' || rcode === 'REFUSED' ? rcode : 'ERROR';
    throw new DnsLookupError(kind, 'CAA', name, kind === 'ERROR' ? rcode : undefined);
  }
  const caa = (res.answers ?? []).filter((a) => a.type === 'CAA');
  if (rcode === 'NOERROR' && caa.length > 0)
    return { records: caa.map(toRecord), nxdomain: false, ttl: Math.min(...caa.map((a) => a.ttl ?? 0)) };
  const soa = (res.authorities ?? []).find((a): a is Answer & { type: 'SOA' } => a.type === 'SOA');
  const ttl = soa ? Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0) : 0;
  return { records: [], nxdomain: rcode === 'NXDOMAIN', ttl };
}

function toRecord(a: Answer): CaaRecord {
  const d = (a as { data: { flags?: number; tag: string; value: string } }).data;
  return { flags: d.flags ?? 0, tag: d.tag.toLowerCase(), value: d.value };
}

function timeout(name: string): DnsLookupError {
  return new DnsLookupError('TIMEOUT', 'CAA', name);
}

function overUdp(server: Server, msg: Buffer, id: number, name: string, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const timer = setTimeout(() => finish(() => reject(timeout(name))), timeoutMs);
    const finish = (then: () => void) => {
      clearTimeout(timer);
      socket.close();
      then();
    };
    socket.on('error', (err) =>
      finish(() => reject(new DnsLookupError('ERROR', 'CAA', name, (err as NodeJS.ErrnoException).code))),
    );
    socket.on('message', (buf) => {
      let res: DecodedPacket;
      try {
        res = dnsPacket.decode(buf);
      } catch {
        return; // not an answer we can read: keep waiting for one
      }
      // Anything else on this socket is not the answer to our question.
      if (res.id !== id || res.type !== 'response') return;
      finish(() => resolve(res));
    });
    socket.send(msg, server.port, server.host);
  });
}

function overTcp(server: Server, msg: Buffer, id: number, name: string, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(() => reject(timeout(name))), timeoutMs);
    const finish = (then: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      then();
    };
    socket.on('error', (err) =>
      finish(() => reject(new DnsLookupError('ERROR', 'CAA', name, (err as NodeJS.ErrnoException).code))),
    );
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      try {
        const res = dnsPacket.streamDecode(buf) as DecodedPacket;
        if (res.id !== id) throw new Error('answer to another question');
        finish(() => resolve(res));
      } catch (err) {
        finish(() => reject(new DnsLookupError('ERROR', 'CAA', name, (err as Error).message)));
      }
    });
    socket.connect(server.port, server.host, () => socket.write(msg));
  });
}

/** The longest a CAA answer is kept, whatever its TTL: the CA/B Baseline Requirements' 8 hours. */
const MAX_CACHE_SECONDS = 8 * 3600;
const MAX_ENTRIES = 10_000;

/**
 * CAA answers kept for their TTL (at most 8 hours), per name: a CA checking many names under one
 * domain asks once per level. Failures are never kept. A first try gets a third of the time; a
 * lost UDP answer is asked again within the rest.
 */
export function cachedCaaLookup(
  server: Server,
  timeoutMs: number,
  now: () => number = Date.now,
): (name: string) => Promise<CaaRecord[]> {
  const kept = new Map<string, { answer: CaaAnswer; until: number }>();
  const ask = async (name: string): Promise<CaaAnswer> => {
    const first = Math.max(50, Math.floor(timeoutMs / 3));
    try {
      return await queryCaa(server, name, first);
    } catch (err) {
      if (!(err instanceof DnsLookupError) || err.kind !== 'TIMEOUT') throw err;
      return queryCaa(server, name, Math.max(50, timeoutMs - first));
    }
  };
  return async (raw) => {
    const name = raw.toLowerCase().replace(/\.$/, '');
    const hit = kept.get(name);
    let answer: CaaAnswer;
    if (hit && hit.until > now()) answer = hit.answer;
    else {
      answer = await ask(name);
      const ttl = Math.min(answer.ttl, MAX_CACHE_SECONDS);
      if (ttl > 0) {
        if (kept.size >= MAX_ENTRIES) kept.delete(kept.keys().next().value!);
        kept.delete(name);
        kept.set(name, { answer, until: now() + ttl * 1000 });
      }
    }
    if (answer.nxdomain) throw new DnsLookupError('NXDOMAIN', 'CAA', name);
    return answer.records;
  };
}
