// The lab's agents and etcd: started detached inside their namespaces, asked over HTTP. An agent's
// --listen address is a unix socket under the lab root; unix sockets are not bound to a network
// namespace, so the lab (in the root namespace) reaches every agent without entering its namespace.
import { request } from 'node:http';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { inNetns, run } from '../linux/run.ts';
import { cmdlineOf, isAlive, spawnDetached } from './processes.ts';
import { KUBE_API_PORT, NODE_PREFIX_V4, NODE_PREFIX_V6, agentArgs, clusterCIDRs, etcdDataDir, etcdEndpoint, etcdPkiDir, etcdctlArgs, kubeTokenFile, nodePaths, segment } from './topology.ts';
import { pkiFiles } from './pki-files.ts';
import type { LabOptions, NodePlan } from './topology.ts';

export class AgentError extends Error {
  override readonly name = 'AgentError';
}

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

/** GET path from the agent listening on socketPath; rejects when nobody answers within timeoutMs. */
export function getFromSocket(socketPath: string, path: string, timeoutMs = 2_000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

// The agent's /status answer is the agent's own type: one definition for both sides of the socket.
export type { PeerStatus } from '../agent/daemon.ts';
import type { CniCallTally } from '../agent/cni-server.ts';
import type { PeerStatus } from '../agent/daemon.ts';

export interface AgentStatus {
  readonly node: string;
  readonly podCIDRs: readonly string[];
  readonly underlayIPs: readonly string[];
  readonly backend: string;
  readonly peers: readonly PeerStatus[];
  readonly ready: boolean;
  /** The plugin calls its server took (src/agent/cni-server.ts), or null when it serves none. */
  readonly cniCalls: CniCallTally | null;
}

export async function agentStatus(root: string, node: string): Promise<AgentStatus> {
  const a = await getFromSocket(nodePaths(root, node).socket, '/status');
  if (a.status !== 200) throw new AgentError(`agent ${node}: /status answered ${a.status}`);
  const s = JSON.parse(a.body) as Partial<AgentStatus>;
  return {
    node: s.node ?? node,
    podCIDRs: s.podCIDRs ?? [],
    underlayIPs: s.underlayIPs ?? [],
    backend: s.backend ?? '',
    peers: s.peers ?? [],
    ready: s.ready === true,
    cniCalls: s.cniCalls ?? null,
  };
}

/** "ready", "not ready: <body>", or "down: <why>". */
export async function agentHealth(root: string, node: string): Promise<string> {
  try {
    const a = await getFromSocket(nodePaths(root, node).socket, '/readyz', 1_000);
    return a.status === 200 ? 'ready' : `not ready: ${a.body.trim().split('\n').join('; ').slice(0, 160)}`;
  } catch (e) {
    return `down: ${(e as Error).message}`;
  }
}

export function startAgent(flatnetd: string, node: NodePlan, o: LabOptions): number {
  if (!existsSync(flatnetd)) throw new AgentError(`${flatnetd} does not exist: run "npm run build" first`);
  const p = nodePaths(o.root, node.name);
  for (const d of [p.dir, p.cniConfDir, p.ipamDataDir, p.cniCacheDir]) mkdirSync(d, { recursive: true });
  // nsenter rather than `ip netns exec`: the latter gives the agent a mount namespace of its own, and the
  // agent serves plugin calls only from its own mount namespace (src/agent/cni-server.ts); the lab's
  // runtime calls the plugin through nsenter too, so both share the host's.
  return spawnDetached(inNetns(node.netns, [flatnetd, ...agentArgs(node, o)]), p.log);
}

export function logTail(file: string, lines = 12): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until the agent's /readyz answers 200; fails early when the agent process exits. */
export async function waitAgentReady(root: string, node: string, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (!isAlive(pid)) {
      throw new AgentError(`agent ${node} (pid ${pid}) exited; last lines of ${nodePaths(root, node).log}:\n${logTail(nodePaths(root, node).log)}`);
    }
    last = await agentHealth(root, node);
    if (last === 'ready') return;
    await sleep(200);
  }
  throw new AgentError(`agent ${node} not ready after ${timeoutMs / 1000} s (${last}); log ${nodePaths(root, node).log}:\n${logTail(nodePaths(root, node).log)}`);
}

/** True when pid is a process this lab started (its command line names the lab root), so a recycled pid is never killed. */
export function isLabProcess(pid: number, root: string): boolean {
  const cmd = cmdlineOf(pid);
  return cmd !== undefined && cmd.includes(root);
}

/**
 * etcd inside the fabric namespace, listening on the fabric's first address (every node routes there), over
 * TLS with the lab's server certificate, letting in only clients whose certificate the lab's CA signed.
 */
export function startEtcd(fabricNetns: string, root: string): number {
  const dataDir = etcdDataDir(root);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const client = etcdEndpoint();
  const peer = 'http://127.0.0.1:2380';
  const pki = etcdPkiDir(root);
  const server = pkiFiles.server(pki);
  return spawnDetached(
    [
      'ip', 'netns', 'exec', fabricNetns, '/usr/bin/etcd',
      '--name', 'flatnet-lab',
      '--data-dir', dataDir,
      '--listen-client-urls', client,
      '--advertise-client-urls', client,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `flatnet-lab=${peer}`,
      '--heartbeat-interval=10',
      '--election-timeout=100',
      '--logger=zap',
      '--log-level=warn',
      '--cert-file', server.cert,
      '--key-file', server.key,
      '--client-cert-auth',
      '--trusted-ca-file', pkiFiles.ca(pki).cert,
    ],
    `${root}/etcd.log`,
  );
}

/**
 * The STAND-IN Kubernetes API server (src/lab/kube-apiserver-standin.ts) inside the fabric namespace, beside
 * etcd's address; it also assigns each registered node its podCIDRs, as kube-controller-manager would.
 */
export function startKubeApi(self: string, fabricNetns: string, o: LabOptions): number {
  const args = ['--listen', `${segment(0).gatewayV4}:${KUBE_API_PORT}`, '--token-file', kubeTokenFile(o.root)];
  for (const c of clusterCIDRs(o.ipv6)) args.push('--cluster-cidr', c);
  args.push('--node-prefix-v4', String(NODE_PREFIX_V4), '--node-prefix-v6', String(NODE_PREFIX_V6));
  return spawnDetached(['ip', 'netns', 'exec', fabricNetns, self, '__kube-apiserver-standin', ...args], `${o.root}/kube-apiserver.log`);
}

/** Waits for the stand-in's "listening" line. */
export async function waitKubeApiReady(pid: number, root: string, timeoutMs = 15_000): Promise<void> {
  const log = `${root}/kube-apiserver.log`;
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (!isAlive(pid)) throw new AgentError(`the stand-in API server (pid ${pid}) exited:\n${logTail(log)}`);
    if (logTail(log, 50).split('\n').includes('listening')) return;
    await sleep(50);
  }
  throw new AgentError(`the stand-in API server not listening after ${timeoutMs / 1000} s:\n${logTail(log)}`);
}

/** Polls etcd's /health from inside the fabric namespace (the only place its address is reachable from). */
export async function waitEtcdHealthy(fabricNetns: string, pid: number, root: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) throw new AgentError(`etcd (pid ${pid}) exited:\n${logTail(`${root}/etcd.log`)}`);
    const r = await run(inNetns(fabricNetns, [...etcdctlArgs(root), '--dial-timeout=1s', '--command-timeout=1s', 'endpoint', 'health']));
    if (r.code === 0) return;
    await sleep(150);
  }
  throw new AgentError(`etcd not healthy after ${timeoutMs / 1000} s:\n${logTail(`${root}/etcd.log`)}`);
}
