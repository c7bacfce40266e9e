// A minimal, self-contained multi-node topology for the benchmarks (independent of the lab in src/lab).
//
//   fabric namespace  <prefix>fab: bridge fab0 = <fabric>.0.1/16 (lo up; etcd may listen here)
//   node namespace k  <prefix>n<k>: uplink eth0 = <fabric>.0.(10+k)/16, a veth whose other end (v<k>)
//                     is a port of fab0; runs a real dist/bin/flatnetd
//   pod namespace     <prefix>n<k>p<j>: created empty, wired by dist/cni/flatnet run inside node k
//
// Everything is made with `ip` argv arrays (src/linux/run.ts, never a shell) and torn down in reverse: the
// long-running processes this file started are stopped by pid (SIGTERM, SIGKILL after 3 s), then the
// namespaces it created are deleted (a node's veth and its pods' veths go with them), then the temp dir.
// The root namespace's network configuration is never touched: `ip netns add` only creates a namespace
// and its bind mount under /run/netns.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inNetns, run, runOk } from '../src/linux/run.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const FLATNETD = join(ROOT, 'dist/bin/flatnetd');
export const CNI_DIR = join(ROOT, 'dist/cni');
export const FABRIC_BRIDGE = 'fab0';
export const UPLINK = 'eth0';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on this machine. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

export interface NodeNs {
  readonly name: string;
  readonly index: number;
  readonly netns: string;
  readonly ip: string;
  readonly dir: string;
  agent?: ChildProcess;
}

export interface AgentSpec {
  readonly backend: 'host-gw' | 'vxlan';
  readonly store: { readonly kind: 'embedded'; readonly dir: string } | { readonly kind: 'etcd'; readonly endpoint: string };
  readonly clusterCIDR: string;
  readonly resyncS?: number;
  readonly leaseTtlS?: number;
}

export interface PodNs {
  readonly netns: string;
  readonly containerId: string;
  readonly ip: string;
  readonly node: NodeNs;
}

function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Nearest-rank quantile (q in [0,1]) of a non-empty sample; NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i] ?? Number.NaN;
}
export { median };

/**
 * Rows of a Williams design: every item is in every position equally often, and in the rows taken together
 * every item directly follows every other equally often (n rows for even n, 2n for odd).
 */
export function williams(n: number): number[][] {
  const first = [0];
  for (let lo = 1, hi = n - 1; first.length < n; ) first.push(first.length % 2 === 1 ? lo++ : hi--);
  const rows = Array.from({ length: n }, (_, r) => first.map((x) => (x + r) % n));
  return n % 2 === 0 ? rows : [...rows, ...rows.map((r) => [...r].reverse())];
}

/** The bench's topology: tracks everything it creates so teardown() can undo it. */
export class Topology {
  readonly id: string;
  readonly prefix: string;
  readonly tmp: string;
  readonly fabric: string;
  readonly fabricIP: string;
  readonly nodes: NodeNs[] = [];
  private readonly namespaces: string[] = [];
  private readonly procs = new Set<ChildProcess>();
  private tornDown = false;

  /** `tag` (2-4 letters) names the benchmark in the namespace prefix: fnb-<tag><random>-. */
  constructor(tag: string, readonly fabricNet = '172.29') {
    this.id = `${tag}${randomBytes(2).toString('hex')}`;
    this.prefix = `fnb-${this.id}-`;
    this.tmp = mkdtempSync(join(tmpdir(), `flatnet-bench-${this.id}-`));
    this.fabric = `${this.prefix}fab`;
    this.fabricIP = `${fabricNet}.0.1`;
  }

  private async addNetns(name: string): Promise<void> {
    await runOk(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await runOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  async createFabric(): Promise<void> {
    await this.addNetns(this.fabric);
    await runOk(['ip', '-n', this.fabric, '-batch', '-'], {
      input: [
        `link add ${FABRIC_BRIDGE} type bridge`,
        `addr add ${this.fabricIP}/16 dev ${FABRIC_BRIDGE}`,
        `link set ${FABRIC_BRIDGE} up`,
        '',
      ].join('\n'),
    });
  }

  /** Node k (1-based): namespace, uplink eth0 <fabric>.0.(10+k)/16 on the fabric bridge, a work dir. */
  async addNode(index: number): Promise<NodeNs> {
    const name = `n${index}`;
    const netns = `${this.prefix}${name}`;
    await this.addNetns(netns);
    const port = `v${index}`;
    // Create the pair inside the fabric namespace with the node's end born in the node namespace.
    await runOk(['ip', '-n', this.fabric, 'link', 'add', port, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', netns]);
    await runOk(['ip', '-n', this.fabric, '-batch', '-'], { input: `link set ${port} master ${FABRIC_BRIDGE}\nlink set ${port} up\n` });
    const ip = `${this.fabricNet}.0.${10 + index}`;
    await runOk(['ip', '-n', netns, '-batch', '-'], { input: `addr add ${ip}/16 dev ${UPLINK}\nlink set ${UPLINK} up\n` });
    const dir = join(this.tmp, name);
    mkdirSync(dir, { recursive: true });
    const node: NodeNs = { name, index, netns, ip, dir };
    this.nodes.push(node);
    return node;
  }

  /** Starts a long-running process inside a namespace (via `ip netns exec`, which execs: the pid is the program's). */
  spawnIn(netns: string, argv: readonly string[], logFile: string): ChildProcess {
    const fd = openSync(logFile, 'a');
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', fd, fd], detached: false });
    closeSync(fd);
    this.procs.add(child);
    child.once('exit', () => this.procs.delete(child));
    return child;
  }

  /** Registers a child started elsewhere (e.g. a worker with pipes) for teardown. */
  track(child: ChildProcess): void {
    this.procs.add(child);
    child.once('exit', () => this.procs.delete(child));
  }

  agentArgs(node: NodeNs, spec: AgentSpec): string[] {
    const store =
      spec.store.kind === 'embedded'
        ? ['--store', 'embedded', '--store-dir', spec.store.dir]
        : ['--store', 'etcd', '--etcd-endpoints', spec.store.endpoint];
    return [
      FLATNETD,
      '--node', node.name,
      '--uplink', UPLINK,
      ...store,
      '--cluster-cidr', spec.clusterCIDR,
      '--cni-conf-dir', join(node.dir, 'net.d'),
      '--ipam-data-dir', join(node.dir, 'ipam'),
      '--listen', `unix:${this.socket(node)}`,
      '--backend', spec.backend,
      '--log-format', 'json',
      '--resync', String(spec.resyncS ?? 10),
      ...(spec.leaseTtlS !== undefined ? ['--lease-ttl', String(spec.leaseTtlS)] : []),
    ];
  }

  socket(node: NodeNs): string {
    return join(node.dir, 'agent.sock');
  }

  startAgent(node: NodeNs, spec: AgentSpec): ChildProcess {
    const child = this.spawnIn(node.netns, this.agentArgs(node, spec), join(node.dir, 'agent.log'));
    node.agent = child;
    return child;
  }

  /** Stops the node's agent by pid and waits for it to exit. */
  async stopAgent(node: NodeNs): Promise<void> {
    const a = node.agent;
    if (!a) return;
    await stopChild(a);
    delete node.agent;
  }

  /** Polls /readyz over the agent's unix socket until it answers 200. */
  async waitReady(node: NodeNs, timeoutMs = 60_000): Promise<number> {
    const t0 = nowMs();
    while (nowMs() - t0 < timeoutMs) {
      if (node.agent && node.agent.exitCode !== null) {
        throw new Error(`agent on ${node.name} exited ${node.agent.exitCode}: ${tail(join(node.dir, 'agent.log'))}`);
      }
      const r = await httpUnix(this.socket(node), '/readyz').catch(() => undefined);
      if (r?.status === 200) return nowMs() - t0;
      await sleep(50);
    }
    throw new Error(`agent on ${node.name} not ready after ${timeoutMs} ms: ${tail(join(node.dir, 'agent.log'))}`);
  }

  /** Creates pod namespace <node>p<j> and runs CNI ADD with the node's conflist, inside the node namespace. */
  async addPod(node: NodeNs, j: number): Promise<PodNs> {
    const netns = `${this.prefix}${node.name}p${j}`;
    await this.addNetns(netns);
    const list = JSON.parse(readFileSync(join(node.dir, 'net.d', '10-flatnet.conflist'), 'utf8')) as {
      cniVersion: string;
      name: string;
      plugins: Record<string, unknown>[];
    };
    const plugin = list.plugins[0];
    if (!plugin) throw new Error(`conflist of ${node.name} has no plugin`);
    const conf = { ...plugin, name: list.name, cniVersion: list.cniVersion };
    const containerId = randomUUID().replaceAll('-', '');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${netns}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: CNI_DIR,
    };
    const r = await runOk(inNetns(node.netns, [join(CNI_DIR, 'flatnet')]), { input: JSON.stringify(conf), env, timeoutMs: 30_000 });
    const result = JSON.parse(r.stdout) as { ips?: { address: string }[] };
    const addr = result.ips?.find((i) => !i.address.includes(':'))?.address;
    if (!addr) throw new Error(`CNI ADD on ${node.name} returned no IPv4 address: ${r.stdout}`);
    return { netns, containerId, ip: addr.split('/')[0] ?? '', node };
  }

  /** Undoes everything (idempotent): processes by pid, then namespaces, then the temp dir. */
  async teardown(): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    await Promise.all([...this.procs].map((c) => stopChild(c)));
    for (const ns of [...this.namespaces].reverse()) {
      await run(['ip', 'netns', 'del', ns]);
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** SIGTERM by pid, SIGKILL after 3 s; resolves once the process has exited. */
export async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

export function tail(file: string, n = 1500): string {
  try {
    return readFileSync(file, 'utf8').slice(-n);
  } catch {
    return '(no log)';
  }
}

export function httpUnix(socketPath: string, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Runs `body` with the topologies torn down afterwards, also on an exception or SIGINT/SIGTERM/SIGHUP
 * (then exits 130). Returns body's value.
 */
export async function withTopologies<T>(topos: readonly Topology[], body: () => Promise<T>): Promise<T> {
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = true;
    process.stderr.write(`\n${sig}: tearing down\n`);
    void Promise.all(topos.map((t) => t.teardown())).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    return await body();
  } finally {
    if (!signalled) {
      for (const t of topos) await t.teardown();
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
}

/** Parses a Prometheus text exposition into "name{labels}" -> value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^(\S+?(?:\{[^}]*\})?)\s+(\S+)$/.exec(line.trim());
    if (m && m[1] !== undefined && m[2] !== undefined) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** VmRSS and VmHWM of a pid in MB (decimal). */
export function memoryOf(pid: number): { rssMB: number; hwmMB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 'NaN');
  return { rssMB: (kb('VmRSS') * 1024) / 1e6, hwmMB: (kb('VmHWM') * 1024) / 1e6 };
}

/** Counts the rules of `nft -j list table inet flatnet` inside a namespace. */
export async function countNftRules(netns: string): Promise<number> {
  const r = await runOk(inNetns(netns, ['nft', '-j', 'list', 'table', 'inet', 'flatnet']));
  const items = (JSON.parse(r.stdout) as { nftables?: Record<string, unknown>[] }).nftables ?? [];
  return items.filter((i) => 'rule' in i).length;
}

/** Formats rows as a fixed-width text table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
