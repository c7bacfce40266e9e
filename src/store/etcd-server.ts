// Runs a single-member etcd on 127.0.0.1 for the lab and the tests: free ports, its own data
// directory, started and stopped by pid.
//
// How it works and what it costs: etcd is a long-running daemon, so unlike the one-shot commands
// of linux/run.ts it is spawned directly (argv array, no shell) and kept as a child; readiness is
// its /health endpoint answering {"health":"true"}. With heartbeat 10 ms / election 100 ms a fresh
// member is healthy in ~150-350 ms and a restart on existing data in ~250 ms on this machine.
// restart() reuses the same ports and data, which is what a client reconnecting after an etcd
// outage sees in production.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdServerOptions {
  /** Data directory; a fresh temporary one (removed by stop()) when omitted. */
  readonly dataDir?: string;
  /** etcd binary (default /usr/bin/etcd). */
  readonly binary?: string;
  /** How long to wait for /health (default 15 s). */
  readonly startTimeoutMs?: number;
  /**
   * Serve clients over TLS with these PEM files, as a production etcd does: https client URL, and with
   * `clientCA` only clients holding a certificate that CA signed get in (etcd's --client-cert-auth).
   */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly clientCAFile?: string };
  /** More etcd flags (e.g. --auth-token-ttl=1 to make auth tokens expire while a test runs). */
  readonly extraArgs?: readonly string[];
}

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:41234 (https with tls) */
  readonly endpoint: string;
  readonly dataDir: string;
  /** pid of the running etcd, undefined while stopped. */
  pid(): number | undefined;
  /** Stops etcd (SIGTERM, then SIGKILL after 5 s); removes the data dir only if this helper created it. */
  stop(): Promise<void>;
  /** Stops etcd and starts it again on the same ports and data. */
  restart(): Promise<void>;
  /** Stops etcd but keeps the data, for outage tests; start() brings it back. */
  kill(): Promise<void>;
  start(): Promise<void>;
}

export class EtcdServerError extends Error {
  override readonly name = 'EtcdServerError';
}

/** A TCP port nobody listens on right now (the kernel's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(500) });
    const body = (await res.json()) as { health?: unknown };
    return body.health === 'true';
  } catch {
    return false;
  }
}

export async function startEtcd(opts: EtcdServerOptions = {}): Promise<EtcdServer> {
  const ownsDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'flatnet-etcd-')));
  const binary = opts.binary ?? '/usr/bin/etcd';
  const startTimeout = opts.startTimeoutMs ?? 15_000;
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  const peerURL = `http://127.0.0.1:${peerPort}`;
  // Health is asked on a plain-HTTP metrics listener (as kubeadm's probes do), so the check needs no
  // client certificate however the client port is secured.
  const healthURL = `http://127.0.0.1:${await freePort()}`;
  const tls = opts.tls;
  const argv = [
    '--name', 'flatnet',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerURL,
    '--initial-advertise-peer-urls', peerURL,
    '--initial-cluster', `flatnet=${peerURL}`,
    '--heartbeat-interval=10',
    '--election-timeout=100',
    '--logger=zap',
    '--log-level=error',
    '--listen-metrics-urls', healthURL,
    ...(tls ? ['--cert-file', tls.certFile, '--key-file', tls.keyFile] : []),
    ...(tls?.clientCAFile !== undefined ? ['--client-cert-auth', '--trusted-ca-file', tls.clientCAFile] : []),
    ...(opts.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderrTail = '';

  const start = async (): Promise<void> => {
    if (child) return;
    stderrTail = '';
    const c = spawn(binary, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    c.once('exit', () => {
      if (child === c) child = undefined;
    });
    c.stderr?.on('data', (b: Buffer) => {
      stderrTail = (stderrTail + b.toString('utf8')).slice(-4000);
    });
    const spawnError = new Promise<Error>((resolve) => c.once('error', resolve));
    const deadline = Date.now() + startTimeout;
    while (Date.now() < deadline) {
      const failed = await Promise.race([spawnError, sleep(0).then(() => undefined)]);
      if (failed) throw new EtcdServerError(`cannot run ${binary}`, { cause: failed });
      if (child !== c) throw new EtcdServerError(`etcd exited during start: ${stderrTail.trim()}`);
      if (await healthy(healthURL)) return;
      await sleep(25);
    }
    await kill();
    throw new EtcdServerError(`etcd at ${endpoint} not healthy after ${startTimeout} ms: ${stderrTail.trim()}`);
  };

  const kill = async (): Promise<void> => {
    const c = child;
    if (!c) return;
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return {
    endpoint,
    dataDir,
    pid: () => child?.pid,
    start,
    kill,
    restart: async () => {
      await kill();
      await start();
    },
    stop: async () => {
      await kill();
      if (ownsDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
