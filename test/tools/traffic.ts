// Continuous traffic for the fault-injection tests: a server and a client that run inside pod namespaces
// (started with `spawnTraffic`, which enters the namespace with nsenter) and keep one TCP connection and
// a UDP flow busy while the test breaks something else.
//
//   server --port P     TCP: echoes every byte back on each connection. UDP (same port): echoes each datagram.
//   client --addr A --port P [--interval-ms 10] [--max-s 600]
//     TCP: ONE connection; every interval writes "<n>\n" with n counting from 0; checks the echo comes back
//     complete and in order. UDP: every interval sends "<n>" (its own counter); records which were answered.
//     Prints "running" once the first TCP echo and the first UDP answer are back, then on SIGTERM (or after
//     --max-s) stops sending, waits up to 3 s for outstanding answers and prints one JSON line (TrafficReport).
//
// The client never retransmits UDP: a sequence number without an answer is a lost datagram (either way).
// Run as a script: node --import tsx test/tools/traffic.ts server|client ...
import type { ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { connect, createServer, isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { inNetns } from '../../src/linux/run.ts';
import { spawnChild } from '../../src/lab/processes.ts';

export interface TrafficReport {
  readonly tcp: {
    /** Counter lines written on the one connection. */
    readonly sent: number;
    /** Lines echoed back, all in order (a wrong line ends the count and sets error). */
    readonly echoed: number;
    /** Longest time between two consecutive echoes while sending (ms). */
    readonly maxGapMs: number;
    /** Why the connection broke or the echo went wrong; absent when it held. */
    readonly error?: string;
  };
  readonly udp: {
    readonly sent: number;
    readonly answered: number;
    /** Sequence numbers never answered (at most the first 50). */
    readonly missing: readonly number[];
    readonly missingCount: number;
    /** Longest time between two consecutive answers while sending (ms). */
    readonly maxGapMs: number;
  };
  readonly durationMs: number;
}

function server(port: number): void {
  const tcp = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('data', (b: Buffer) => sock.write(b));
    sock.on('error', () => sock.destroy());
  });
  const udp = createSocket({ type: 'udp6', ipv6Only: false });
  udp.on('message', (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
  tcp.listen({ port, host: '::', ipv6Only: false }, () => {
    udp.bind(port, '::', () => process.stdout.write('listening\n'));
  });
  process.once('SIGTERM', () => process.exit(0));
}

function client(addr: string, port: number, intervalMs: number, maxS: number): void {
  const t0 = Date.now();
  let running = false;
  let stopping = false;
  // TCP
  let tcpSent = 0;
  let tcpEchoed = 0;
  let tcpError: string | undefined;
  let tcpLast = 0;
  let tcpMaxGap = 0;
  let pending = '';
  const sock = connect({ host: addr, port });
  sock.setNoDelay(true);
  let connected = false;
  sock.on('connect', () => (connected = true));
  sock.on('data', (b: Buffer) => {
    pending += b.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (tcpError !== undefined) continue;
      if (line !== String(tcpEchoed)) {
        tcpError = `echo out of order: expected ${tcpEchoed}, got ${JSON.stringify(line.slice(0, 20))}`;
        continue;
      }
      const now = Date.now();
      if (tcpEchoed > 0 && !stopping) tcpMaxGap = Math.max(tcpMaxGap, now - tcpLast);
      tcpLast = now;
      tcpEchoed++;
    }
    maybeRunning();
  });
  sock.on('error', (e: NodeJS.ErrnoException) => (tcpError ??= `connection error: ${e.code ?? e.message}`));
  sock.on('close', () => {
    if (!stopping) tcpError ??= 'connection closed';
  });
  // UDP
  const udp = createSocket(isIP(addr) === 6 ? 'udp6' : 'udp4');
  let udpSent = 0;
  const answered = new Set<number>();
  let udpLast = 0;
  let udpMaxGap = 0;
  udp.on('message', (msg) => {
    const n = Number(msg.toString('utf8'));
    if (!Number.isInteger(n) || n < 0 || n >= udpSent) return;
    const now = Date.now();
    if (answered.size > 0 && !stopping) udpMaxGap = Math.max(udpMaxGap, now - udpLast);
    udpLast = now;
    answered.add(n);
    maybeRunning();
  });
  udp.on('error', () => undefined);

  function maybeRunning(): void {
    if (!running && tcpEchoed > 0 && answered.size > 0) {
      running = true;
      process.stdout.write('running\n');
    }
  }
  const tick = setInterval(() => {
    if (connected && tcpError === undefined) {
      sock.write(`${tcpSent}\n`);
      tcpSent++;
    }
    udp.send(String(udpSent), port, addr);
    udpSent++;
  }, intervalMs);

  const finish = (): void => {
    if (stopping) return;
    stopping = true;
    clearInterval(tick);
    const deadline = Date.now() + 3_000;
    const wait = setInterval(() => {
      const done = (tcpEchoed >= tcpSent || tcpError !== undefined) && answered.size >= udpSent;
      if (!done && Date.now() < deadline) return;
      clearInterval(wait);
      const missing: number[] = [];
      for (let i = 0; i < udpSent; i++) if (!answered.has(i)) missing.push(i);
      if (tcpError === undefined && tcpEchoed < tcpSent) tcpError = `${tcpSent - tcpEchoed} line(s) never echoed`;
      const report: TrafficReport = {
        tcp: { sent: tcpSent, echoed: tcpEchoed, maxGapMs: tcpMaxGap, ...(tcpError !== undefined ? { error: tcpError } : {}) },
        udp: { sent: udpSent, answered: answered.size, missing: missing.slice(0, 50), missingCount: missing.length, maxGapMs: udpMaxGap },
        durationMs: Date.now() - t0,
      };
      process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(0));
    }, 20);
  };
  process.once('SIGTERM', finish);
  setTimeout(finish, maxS * 1000).unref();
}

/** A traffic process running in a namespace, with its stdout collected. */
export class TrafficProcess {
  private out = '';
  private err = '';
  private readonly exited: Promise<number>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (b: Buffer) => (this.out += b.toString('utf8')));
    child.stderr?.on('data', (b: Buffer) => (this.err += b.toString('utf8')));
    this.exited = new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  }

  /** Resolves once stdout has a line equal to `line`; rejects on exit or timeout. */
  async waitLine(line: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.out.split('\n').includes(line)) {
      if (this.child.exitCode !== null) throw new Error(`traffic process exited (${this.child.exitCode}) before "${line}": ${this.err.trim()}`);
      if (Date.now() > deadline) throw new Error(`traffic process: no "${line}" within ${timeoutMs} ms; stderr: ${this.err.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM, then the client's report (the last JSON line). */
  async stop(): Promise<TrafficReport> {
    this.child.kill('SIGTERM');
    const code = await Promise.race([this.exited, new Promise<number>((r) => setTimeout(() => r(-1), 15_000))]);
    if (code === -1) {
      this.child.kill('SIGKILL');
      throw new Error('traffic client did not report within 15 s of SIGTERM');
    }
    const last = this.out.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(last) as TrafficReport;
    } catch {
      throw new Error(`traffic client printed no report (exit ${code}): ${this.out.slice(-300)} ${this.err.slice(-300)}`);
    }
  }

  /** Ends the process (by its own pid) whatever it is doing. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

const SELF = fileURLToPath(import.meta.url);
const TSX = import.meta.resolve('tsx');

/** Starts this tool inside namespace `netns`: spawnTraffic(ns, ['server', '--port', '7700']). */
export function spawnTraffic(netns: string, args: readonly string[]): TrafficProcess {
  return new TrafficProcess(spawnChild(inNetns(netns, [process.execPath, '--import', TSX, SELF, ...args])));
}

/** Server in one pod, client in another; resolves once traffic flows both ways on TCP and UDP. */
export async function startTraffic(serverNetns: string, clientNetns: string, serverAddr: string, port = 7700): Promise<{ server: TrafficProcess; client: TrafficProcess }> {
  const srv = spawnTraffic(serverNetns, ['server', '--port', String(port)]);
  try {
    await srv.waitLine('listening', 30_000);
  } catch (e) {
    srv.kill();
    throw e;
  }
  const cli = spawnTraffic(clientNetns, ['client', '--addr', serverAddr, '--port', String(port)]);
  try {
    await cli.waitLine('running', 30_000);
  } catch (e) {
    cli.kill();
    srv.kill();
    throw e;
  }
  return { server: srv, client: cli };
}

if (process.argv[1] === SELF) {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: { port: { type: 'string' }, addr: { type: 'string' }, 'interval-ms': { type: 'string' }, 'max-s': { type: 'string' } },
    strict: true,
  });
  const port = Number(values.port ?? 7700);
  if (mode === 'server') server(port);
  else if (mode === 'client' && values.addr !== undefined) client(values.addr, port, Number(values['interval-ms'] ?? 10), Number(values['max-s'] ?? 600));
  else {
    process.stderr.write('usage: traffic.ts server --port P | client --addr A --port P [--interval-ms 10] [--max-s 600]\n');
    process.exit(2);
  }
}
