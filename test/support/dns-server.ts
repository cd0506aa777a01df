/**
 * A small authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP on the same random port).
 *
 * Tests set records at runtime and point the validation resolver at `address`. It behaves like
 * the recursive resolver a CA would use, in the ways validation depends on: unknown names answer
 * NXDOMAIN, known names without the asked type answer NOERROR with no records, names that only
 * exist as parents of other names (empty non-terminals) answer NOERROR, and CNAMEs are chased
 * inside the data it holds, so the answer carries the CNAME chain followed by the target records.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server as TcpServer, type Socket as TcpSocket } from 'node:net';
import { isIP } from 'node:net';

import type { Answer, DecodedPacket, Packet, Question } from 'dns-packet';
import dnsPacket from 'dns-packet';

export interface TestCaaRecord {
  /** Flags octet; 128 is the issuer-critical bit. */
  flags: number;
  /** Any tag, including unknown ones (dns-packet types only name issue/issuewild/iodef). */
  tag: string;
  value: string;
}

/** What `fail` can make a name answer. `TIMEOUT` drops the query, so the client must time out. */
export type TestDnsFailure = 'SERVFAIL' | 'REFUSED' | 'NOTIMP' | 'FORMERR' | 'TIMEOUT';

export interface TestDnsQuery {
  name: string;
  type: string;
  transport: 'udp' | 'tcp';
}

export interface TestDnsServer {
  readonly port: number;
  /** `127.0.0.1:<port>`, the form `ValidationConfig.dnsResolver` takes. */
  readonly address: string;
  /**
   * Replaces the A records of `name` with the IPv4 addresses given; IPv6 addresses in the list
   * replace its AAAA records (so `setA(name, ['127.0.0.1', '::1'])` sets both).
   */
  setA(name: string, ips: string | readonly string[]): void;
  /** Replaces the AAAA records of `name`. */
  setAaaa(name: string, ips: string | readonly string[]): void;
  /** Replaces the TXT records of `name`: one RR per entry; an array entry is one multi-string RR. */
  setTxt(name: string, values: readonly (string | readonly string[])[]): void;
  /** Makes `name` a CNAME to `target` (a CNAME owner holds no other records, so this clears them). */
  setCname(name: string, target: string): void;
  /**
   * Replaces the CAA records of `name`, answered with `ttl` seconds: 0 by default, so a test that
   * changes them sees the change at once (validation keeps CAA answers for their TTL).
   */
  setCaa(name: string, records: readonly TestCaaRecord[], ttl?: number): void;
  /** Forgets one name (records and failures), or everything (the query log included). */
  clear(name?: string): void;
  /**
   * With `seconds` > 0, answers without records (NODATA, NXDOMAIN) carry the zone's SOA with that
   * minimum, which tells a resolver how long it may keep them (RFC 2308); 0 (the default) leaves it out.
   */
  setNegativeTtl(seconds: number): void;
  /** Makes queries for `name` (all types, or just `type`) fail; `null` heals it. */
  fail(name: string, rcode: TestDnsFailure | null, type?: 'A' | 'AAAA' | 'TXT' | 'CNAME' | 'CAA'): void;
  /** Every question received so far, in order. */
  queries(): readonly TestDnsQuery[];
  close(): Promise<void>;
}

interface NameRecords {
  a: string[];
  aaaa: string[];
  txt: string[][];
  cname?: string;
  caa: TestCaaRecord[];
  caaTtl?: number;
}

const RCODE: Record<Exclude<TestDnsFailure, 'TIMEOUT'>, number> = {
  FORMERR: 1,
  SERVFAIL: 2,
  NOTIMP: 4,
  REFUSED: 5,
};
const NXDOMAIN = 3;
const MAX_CNAME_CHAIN = 8;
const TTL = 1;

function norm(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

function toList<T>(v: T | readonly T[]): T[] {
  return Array.isArray(v) ? [...(v as readonly T[])] : [v as T];
}

type Outcome = { drop: true } | { drop: false; rcode: number; answers: Answer[] };

/** `port` 0 (the default) picks a free one; a fixed port is for tests that follow documented commands. */
export async function startTestDnsServer(port = 0): Promise<TestDnsServer> {
  const zone = new Map<string, NameRecords>();
  // key: name, or name + '/' + type
  const failures = new Map<string, TestDnsFailure>();
  const log: TestDnsQuery[] = [];
  let negativeTtl = 0;

  const entry = (name: string): NameRecords => {
    const key = norm(name);
    let rec = zone.get(key);
    if (!rec) {
      rec = { a: [], aaaa: [], txt: [], caa: [] };
      zone.set(key, rec);
    }
    return rec;
  };

  const exists = (name: string): boolean => {
    if (zone.has(name)) return true;
    // An empty non-terminal exists (NOERROR/NODATA) although it holds nothing itself.
    const suffix = `.${name}`;
    for (const k of zone.keys()) if (k.endsWith(suffix)) return true;
    return false;
  };

  const failureFor = (name: string, type: string): TestDnsFailure | undefined =>
    failures.get(`${name}/${type}`) ?? failures.get(name);

  const recordsOf = (name: string, rec: NameRecords, type: string): Answer[] => {
    switch (type) {
      case 'A':
        return rec.a.map((ip) => ({ type: 'A', name, ttl: TTL, data: ip }));
      case 'AAAA':
        return rec.aaaa.map((ip) => ({ type: 'AAAA', name, ttl: TTL, data: ip }));
      case 'TXT':
        return rec.txt.map((strings) => ({ type: 'TXT', name, ttl: TTL, data: strings }));
      case 'CAA':
        return rec.caa.map((c) => ({
          type: 'CAA',
          name,
          ttl: rec.caaTtl ?? 0,
          // dns-packet's types only list the registered tags; the wire format takes any.
          data: { flags: c.flags, tag: c.tag as 'issue', value: c.value },
        }));
      default:
        return [];
    }
  };

  const answer = (q: Question): Outcome => {
    const answers: Answer[] = [];
    let name = norm(q.name);
    const type = String(q.type);
    for (let hop = 0; hop <= MAX_CNAME_CHAIN; hop++) {
      const failure = failureFor(name, type);
      if (failure === 'TIMEOUT') return { drop: true };
      if (failure) return { drop: false, rcode: RCODE[failure], answers: [] };
      // Every two-label name with records below it is a zone apex here, so clients that look for
      // the zone (lego's dns-01 solver asks for the SOA) find one.
      if (type === 'SOA' && name.split('.').length === 2 && exists(name)) {
        const soa = {
          mname: `ns.${name}`,
          rname: `hostmaster.${name}`,
          serial: 1,
          refresh: 60,
          retry: 60,
          expire: 600,
          minimum: 1,
        };
        return { drop: false, rcode: 0, answers: [{ type: 'SOA', name, ttl: TTL, data: soa }] };
      }
      const rec = zone.get(name);
      if (!rec) return { drop: false, rcode: exists(name) ? 0 : NXDOMAIN, answers };
      if (rec.cname !== undefined) {
        answers.push({ type: 'CNAME', name, ttl: TTL, data: rec.cname });
        if (type === 'CNAME') return { drop: false, rcode: 0, answers };
        name = rec.cname;
        continue;
      }
      answers.push(...recordsOf(name, rec, type));
      return { drop: false, rcode: 0, answers };
    }
    return { drop: false, rcode: RCODE.SERVFAIL, answers: [] };
  };

  const respond = (query: DecodedPacket, transport: 'udp' | 'tcp'): Buffer | null => {
    const q = query.questions?.[0];
    if (!q) return null;
    log.push({ name: norm(q.name), type: String(q.type), transport });
    const out = answer(q);
    if (out.drop) return null;
    const opt = query.additionals?.find((a) => a.type === 'OPT');
    const response: Packet = {
      type: 'response',
      id: query.id ?? 0,
      flags:
        dnsPacket.AUTHORITATIVE_ANSWER |
        dnsPacket.RECURSION_AVAILABLE |
        ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
        out.rcode,
      questions: [q],
      answers: out.answers,
      ...(negativeTtl > 0 && out.answers.length === 0
        ? {
            authorities: [
              {
                type: 'SOA',
                name: norm(q.name).split('.').slice(-2).join('.'),
                ttl: negativeTtl,
                data: {
                  mname: 'ns.test',
                  rname: 'hostmaster.test',
                  serial: 1,
                  refresh: 60,
                  retry: 60,
                  expire: 600,
                  minimum: negativeTtl,
                },
              } as Answer,
            ],
          }
        : {}),
      ...(opt ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: 0 } as Answer] } : {}),
    };
    let buf = dnsPacket.encode(response);
    if (transport === 'udp') {
      const limit = opt && 'udpPayloadSize' in opt ? Math.max(512, opt.udpPayloadSize) : 512;
      if (buf.length > limit) {
        // Too big for a datagram: signal truncation so the client retries over TCP.
        buf = dnsPacket.encode({
          ...response,
          flags: (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
          answers: [],
        });
      }
    }
    return buf;
  };

  const decode = (buf: Buffer): DecodedPacket | null => {
    try {
      return dnsPacket.decode(buf);
    } catch {
      return null;
    }
  };

  const bound = await bindBoth(
    (msg: Buffer, rinfo: RemoteInfo, sock: UdpSocket) => {
      const query = decode(msg);
      if (!query) return;
      const reply = respond(query, 'udp');
      if (reply) sock.send(reply, rinfo.port, rinfo.address);
    },
    (sock: TcpSocket) => {
      let pending = Buffer.alloc(0);
      sock.on('error', () => sock.destroy());
      sock.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 2) {
          const len = pending.readUInt16BE(0);
          if (pending.length < len + 2) break;
          const query = decode(pending.subarray(2, len + 2));
          pending = pending.subarray(len + 2);
          if (!query) continue;
          const reply = respond(query, 'tcp');
          if (reply) {
            const prefix = Buffer.alloc(2);
            prefix.writeUInt16BE(reply.length);
            sock.write(Buffer.concat([prefix, reply]));
          }
        }
      });
    },
    port,
  );
  const { udp, tcp } = bound;

  const sockets = new Set<TcpSocket>();
  tcp.on('connection', (s: TcpSocket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  return {
    port: bound.port,
    address: `127.0.0.1:${bound.port}`,
    setA(name, ips) {
      const list = toList(ips);
      const rec = entry(name);
      delete rec.cname;
      rec.a = list.filter((ip) => isIP(ip) === 4);
      const v6 = list.filter((ip) => isIP(ip) === 6);
      if (v6.length > 0) rec.aaaa = v6;
      const bad = list.filter((ip) => isIP(ip) === 0);
      if (bad.length > 0) throw new Error(`not IP addresses: ${bad.join(', ')}`);
    },
    setAaaa(name, ips) {
      const list = toList(ips);
      if (list.some((ip) => isIP(ip) !== 6)) throw new Error(`not IPv6 addresses: ${list.join(', ')}`);
      const rec = entry(name);
      delete rec.cname;
      rec.aaaa = list;
    },
    setTxt(name, values) {
      const rec = entry(name);
      delete rec.cname;
      rec.txt = values.map((v) => toList(v as string | readonly string[]));
    },
    setCname(name, target) {
      const rec = entry(name);
      rec.a = [];
      rec.aaaa = [];
      rec.txt = [];
      rec.caa = [];
      rec.cname = norm(target);
    },
    setNegativeTtl(seconds) {
      negativeTtl = seconds;
    },
    setCaa(name, records, ttl = 0) {
      const rec = entry(name);
      delete rec.cname;
      rec.caa = records.map((r) => ({ ...r }));
      rec.caaTtl = ttl;
    },
    clear(name) {
      if (name === undefined) {
        zone.clear();
        failures.clear();
        log.length = 0;
        return;
      }
      const key = norm(name);
      zone.delete(key);
      for (const k of [...failures.keys()]) if (k === key || k.startsWith(`${key}/`)) failures.delete(k);
    },
    fail(name, rcode, type) {
      const key = type ? `${norm(name)}/${type}` : norm(name);
      if (rcode === null) failures.delete(key);
      else failures.set(key, rcode);
    },
    queries() {
      return [...log];
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => {
        let left = 2;
        const done = (): void => {
          if (--left === 0) resolve();
        };
        udp.close(done);
        tcp.close(done);
      });
    },
  };
}

/** Binds UDP on a random (or the given) port, then TCP on the same port, retrying if TCP finds it taken. */
async function bindBoth(
  onMessage: (msg: Buffer, rinfo: RemoteInfo, sock: UdpSocket) => void,
  onConnection: (sock: TcpSocket) => void,
  fixedPort = 0,
): Promise<{ udp: UdpSocket; tcp: TcpServer; port: number }> {
  for (let attempt = 0; attempt < (fixedPort ? 1 : 20); attempt++) {
    const udp = createSocket('udp4');
    udp.on('message', (msg, rinfo) => onMessage(msg, rinfo, udp));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(fixedPort, '127.0.0.1', () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    const tcp = createServer(onConnection);
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return { udp, tcp, port };
    await new Promise<void>((resolve) => udp.close(() => resolve()));
  }
  throw new Error('could not bind UDP and TCP on one port');
}
