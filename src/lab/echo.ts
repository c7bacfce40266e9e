// The traffic verify sends: a tiny echo server (run inside a pod or the outside host) and a probe (run
// inside the sending namespace). The server answers every TCP connection and UDP datagram with one JSON
// line -- the address it saw the sender from and how many bytes arrived -- followed by that many bytes
// back, so a 2000-byte probe crosses the path in both directions. Listening on "::" with IPv6-only off
// takes both families on one socket; IPv4 senders then appear as "::ffff:a.b.c.d", which is unwrapped.
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, isIP } from 'node:net';

export type Proto = 'tcp' | 'udp';

export interface EchoReply {
  /** The sender's address as the server saw it. */
  readonly saw: string;
  /** Bytes the server received. */
  readonly bytes: number;
}

export interface ProbeRequest {
  readonly id: string;
  readonly proto: Proto;
  readonly addr: string;
  readonly port: number;
  readonly size: number;
  readonly timeoutMs?: number;
}

export interface ProbeOutcome {
  readonly id: string;
  readonly ok: boolean;
  readonly saw?: string;
  /** Bytes the server said it received. */
  readonly bytes?: number;
  /** Bytes that came back after the header. */
  readonly returned?: number;
  readonly error?: string;
  readonly ms: number;
}

export function unmapAddress(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

function header(saw: string, bytes: number): Buffer {
  return Buffer.from(JSON.stringify({ saw: unmapAddress(saw), bytes } satisfies EchoReply) + '\n');
}

/** Splits a reply into its header and the returned payload length. */
export function parseReply(buf: Buffer): { reply: EchoReply; returned: number } {
  const nl = buf.indexOf(0x0a);
  if (nl < 0) throw new Error('reply has no header line');
  const raw = JSON.parse(buf.subarray(0, nl).toString('utf8')) as Partial<EchoReply>;
  if (typeof raw.saw !== 'string' || typeof raw.bytes !== 'number') throw new Error('reply header malformed');
  return { reply: { saw: raw.saw, bytes: raw.bytes }, returned: buf.length - nl - 1 };
}

export interface EchoServer {
  close(): void;
}

/** Starts the TCP and UDP echo on [::]; resolves once both listen. */
export function startEcho(tcpPort: number, udpPort: number): Promise<EchoServer> {
  const tcp = createServer((sock) => {
    let n = 0;
    const chunks: Buffer[] = [];
    sock.on('data', (b: Buffer) => {
      n += b.length;
      chunks.push(b);
    });
    sock.on('end', () => {
      sock.end(Buffer.concat([header(sock.remoteAddress ?? '?', n), ...chunks]));
    });
    sock.on('error', () => sock.destroy());
    sock.setTimeout(10_000, () => sock.destroy());
  });
  const udp: UdpSocket = createSocket({ type: 'udp6', ipv6Only: false });
  udp.on('message', (msg, rinfo) => {
    udp.send(Buffer.concat([header(rinfo.address, msg.length), msg]), rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    tcp.once('error', reject);
    udp.once('error', reject);
    tcp.listen({ port: tcpPort, host: '::', ipv6Only: false }, () => {
      udp.bind(udpPort, '::', () => resolve({ close: () => (tcp.close(), udp.close()) }));
    });
  });
}

function payload(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = 97 + (i % 26);
  return b;
}

function probeTcp(r: ProbeRequest, t0: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = connect({ host: r.addr, port: r.port });
    const done = (o: Omit<ProbeOutcome, 'id' | 'ms'>): void => {
      sock.destroy();
      resolve({ id: r.id, ms: Date.now() - t0, ...o });
    };
    sock.setTimeout(r.timeoutMs ?? 3_000, () => done({ ok: false, error: 'timeout' }));
    sock.on('error', (e) => done({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    sock.on('connect', () => sock.end(payload(r.size)));
    sock.on('data', (b: Buffer) => chunks.push(b));
    sock.on('end', () => {
      try {
        const { reply, returned } = parseReply(Buffer.concat(chunks));
        done({ ok: true, saw: reply.saw, bytes: reply.bytes, returned });
      } catch (e) {
        done({ ok: false, error: (e as Error).message });
      }
    });
  });
}

/** One datagram, resent up to three times (UDP may lose the first one while ARP/ND resolves). */
function probeUdp(r: ProbeRequest, t0: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const sock = createSocket(isIP(r.addr) === 6 ? 'udp6' : 'udp4');
    const per = Math.max(200, Math.floor((r.timeoutMs ?? 3_000) / 3));
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    const done = (o: Omit<ProbeOutcome, 'id' | 'ms'>): void => {
      if (timer) clearTimeout(timer);
      sock.close();
      resolve({ id: r.id, ms: Date.now() - t0, ...o });
    };
    const send = (): void => {
      if (tries++ === 3) return done({ ok: false, error: 'timeout' });
      sock.send(payload(r.size), r.port, r.addr, (e) => {
        if (e) done({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message });
      });
      timer = setTimeout(send, per);
    };
    sock.on('message', (msg) => {
      try {
        const { reply, returned } = parseReply(msg);
        done({ ok: true, saw: reply.saw, bytes: reply.bytes, returned });
      } catch (e) {
        done({ ok: false, error: (e as Error).message });
      }
    });
    sock.on('error', (e) => done({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    send();
  });
}

export function probe(r: ProbeRequest): Promise<ProbeOutcome> {
  const t0 = Date.now();
  return r.proto === 'tcp' ? probeTcp(r, t0) : probeUdp(r, t0);
}

/** Runs many probes with at most `limit` in flight. */
export async function probeAll(reqs: readonly ProbeRequest[], limit = 16): Promise<ProbeOutcome[]> {
  const out: ProbeOutcome[] = new Array<ProbeOutcome>(reqs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < reqs.length) {
      const i = next++;
      out[i] = await probe(reqs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, reqs.length) }, worker));
  return out;
}
