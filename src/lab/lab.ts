// Brings the lab up and down and changes it while it runs. Order of `up`: root dir + marker, fabric,
// outside host, etcd (if asked), nodes with their agents, wait for every agent's /readyz, then pods via
// CNI ADD. state.json is rewritten after each step. A failure part-way stops there and leaves everything
// as it is for inspection (logs under the root); `down` removes it, with or without a readable state.
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { inNetns, run } from '../linux/run.ts';
import { removeStaleCniSocket } from '../agent/cni-server.ts';
import { agentStatus, isLabProcess, startAgent, startEtcd, startKubeApi, waitAgentReady, waitEtcdHealthy, waitKubeApiReady } from './agents.ts';
import { CniCallError, addNetworkList, delNetworkList, loadConflist } from './cni-runtime.ts';
import type { CniHost } from './cni-runtime.ts';
import { kubernetesArgs, resultIPs } from './libcni.ts';
import type { RuntimeConf } from './libcni.ts';
import { listNetns, removeNetns, setupFabric, setupNode, setupOutside, setupPodNetns } from './namespaces.ts';
import { isAlive, stopPids } from './processes.ts';
import { ROOT_MARKER, STATE_VERSION, readState, statePath, writeState } from './state.ts';
import type { LabState, NodeState, PodState } from './state.ts';
import {
  NETWORK_NAME,
  POD_IFNAME,
  ETCDCTL_CLIENT,
  choosePodName,
  etcdAddress,
  etcdEndpoint,
  etcdPkiDir,
  kubeApiEndpoint,
  kubeTokenFile,
  nextNodeIndex,
  nodeIndexOf,
  nodePaths,
  planFabric,
  planNode,
  planOutside,
  storeDir,
  validateOptions,
} from './topology.ts';
import type { LabOptions, NodePlan } from './topology.ts';
import { createPki, openPki } from './pki.ts';

/** Where the lab finds the project's executables (derived from the running flatnet bundle). */
export interface LabPaths {
  /** This CLI (dist/bin/flatnet): verify runs its hidden __echo/__probe subcommands in namespaces. */
  readonly self: string;
  readonly flatnetd: string;
  /** Directory holding the CNI plugin `flatnet`. */
  readonly cniDir: string;
}

export interface LabContext {
  readonly paths: LabPaths;
  /** Progress lines (stderr). */
  readonly progress: (line: string) => void;
}

export class LabError extends Error {
  override readonly name: string = 'LabError';
}

export class LabExistsError extends LabError {
  override readonly name = 'LabExistsError';
}

export class NoLabError extends LabError {
  override readonly name = 'NoLabError';
}

const AGENT_READY_TIMEOUT_MS = 60_000;
const EXTRA_CNI_PATH = ['/usr/lib/cni', '/opt/cni/bin'];

export function cniHost(ctx: LabContext, o: LabOptions, node: string, netns: string): CniHost {
  const p = nodePaths(o.root, node);
  return { nodeNetns: netns, confDir: p.cniConfDir, cacheDir: p.cniCacheDir, cniPath: [ctx.paths.cniDir, ...EXTRA_CNI_PATH] };
}

function elapsed(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}

/** The state of a running lab, or NoLabError. */
export function requireState(root: string): LabState {
  const s = readState(root);
  if (!s) throw new NoLabError(`no lab at ${root} (no ${statePath(root)}): run "flatnet lab up"`);
  return s;
}

export async function up(ctx: LabContext, o: LabOptions): Promise<LabState> {
  validateOptions(o);
  const t0 = Date.now();
  const leftovers = await listNetns(o.prefix);
  if (existsSync(statePath(o.root)) || existsSync(`${o.root}/${ROOT_MARKER}`) || leftovers.length > 0) {
    const what = leftovers.length ? `namespaces ${leftovers.slice(0, 4).join(', ')}${leftovers.length > 4 ? ', ...' : ''}` : `state in ${o.root}`;
    throw new LabExistsError(`a lab already exists (${what}): run "flatnet lab down${o.root !== '/run/flatnet-lab' ? ` --root ${o.root}` : ''}${o.prefix !== 'fnl-' ? ` --prefix ${o.prefix}` : ''}" first`);
  }
  mkdirSync(o.root, { recursive: true, mode: 0o755 });
  writeFileSync(`${o.root}/${ROOT_MARKER}`, `flatnet lab, prefix ${o.prefix}\n`);
  const state: LabState = { version: STATE_VERSION, options: o, createdAt: new Date().toISOString(), nodes: [], pods: [], phase: 'building' };
  writeState(state);

  const fabric = planFabric(o);
  ctx.progress(`fabric: namespace ${fabric.netns}, ${fabric.segments.map((s) => `${s.bridge} ${s.cidrV4}`).join(', ')}`);
  await setupFabric(fabric, o.ipv6);
  const outside = planOutside(o);
  ctx.progress(`outside host: namespace ${outside.netns}, ${outside.ips.join(', ')}`);
  await setupOutside(outside, fabric.netns);

  if (o.store === 'etcd') {
    const pki = await createPki(etcdPkiDir(o.root), 'flatnet-lab', [etcdAddress()]);
    await pki.client(ETCDCTL_CLIENT);
    ctx.progress(`etcd: a CA for the lab in ${pki.dir} (server certificate, client certificates for etcdctl and each agent)`);
    ctx.progress(`etcd: starting in ${fabric.netns} at ${etcdEndpoint()} (TLS, client certificates required)`);
    state.etcdPid = startEtcd(fabric.netns, o.root);
    writeState(state);
    await waitEtcdHealthy(fabric.netns, state.etcdPid, o.root);
  }
  if (o.store === 'kubernetes') {
    writeFileSync(kubeTokenFile(o.root), `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
    ctx.progress(`kubernetes: starting the STAND-IN API server (not a real kube-apiserver) in ${fabric.netns} at ${kubeApiEndpoint()}`);
    state.kubeApiPid = startKubeApi(ctx.paths.self, fabric.netns, o);
    writeState(state);
    await waitKubeApiReady(state.kubeApiPid, o.root);
  }

  const plans = Array.from({ length: o.nodes }, (_, i) => planNode(i + 1, o));
  for (const n of plans) {
    await startNode(ctx, state, n);
  }
  ctx.progress(`waiting for ${plans.length} agent(s) to be ready (/readyz) ...`);
  await Promise.all(plans.map((n) => waitAgentReady(o.root, n.name, nodeState(state, n.name).agentPid ?? 0, AGENT_READY_TIMEOUT_MS)));
  ctx.progress(`agents ready after ${elapsed(t0)}`);

  // Pods: nodes in parallel, one ADD at a time per node (a runtime serialises sandboxes less, but this
  // keeps a 2-core machine responsive and the output readable).
  await Promise.all(
    plans.map(async (n) => {
      for (let j = 0; j < o.pods; j++) await addPodTo(ctx, state, n.name);
    }),
  );
  await waitConverged(ctx, state);
  state.phase = 'ready';
  writeState(state);
  ctx.progress(`lab up in ${elapsed(t0)}: ${state.nodes.length} node(s), ${state.pods.length} pod(s)`);
  return state;
}

/**
 * Waits until every agent lists every other node as a peer (leases travel by store watch or resync).
 * Nodes whose recorded agent is not running (killed by a test, crashed) are left out on both sides:
 * nobody answers for them, and their leases lapse.
 */
async function waitConverged(ctx: LabContext, state: LabState, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const live = state.nodes.filter((n) => n.agentPid !== undefined && isLabProcess(n.agentPid, state.options.root));
  const names = live.map((n) => n.name);
  let missing: string[] = [];
  while (Date.now() < deadline) {
    missing = [];
    for (const n of live) {
      try {
        const peers = new Set((await agentStatus(state.options.root, n.name)).peers.map((p) => p.node));
        for (const other of names) if (other !== n.name && !peers.has(other)) missing.push(`${n.name} does not list ${other}`);
      } catch (e) {
        missing.push(`${n.name}: ${(e as Error).message}`);
      }
    }
    if (missing.length === 0) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  ctx.progress(`warning: agents not converged after ${timeoutMs / 1000} s: ${missing.join('; ')}`);
}

function nodeState(state: LabState, name: string): NodeState {
  const n = state.nodes.find((x) => x.name === name || x.netns === name);
  if (!n) throw new LabError(`no node "${name}" in this lab (nodes: ${state.nodes.map((x) => x.name).join(', ') || 'none'})`);
  return n;
}

function nodeOrder(state: LabState, node: string): number {
  return state.nodes.find((n) => n.name === node)?.index ?? 0;
}

async function startNode(ctx: LabContext, state: LabState, n: NodePlan): Promise<void> {
  const o = state.options;
  ctx.progress(`node ${n.name}: namespace ${n.netns}, ${n.segment.bridge}, ${n.underlayIPs.join(', ')}`);
  await setupNode(n, planFabric(o).netns);
  const ns: NodeState = { name: n.name, index: n.index, netns: n.netns, segment: n.segment.index, underlayIPs: n.underlayIPs };
  state.nodes.push(ns);
  writeState(state);
  if (o.store === 'kubernetes') {
    // The kubelet's part: the Node object exists before the network agent starts; the stand-in assigns
    // its podCIDRs as kube-controller-manager would.
    await kubeNode(ctx, o, 'register', n.name);
    ctx.progress(`node ${n.name}: Node registered with the API server stand-in`);
  }
  // The node's own etcd client certificate, as a real node would be issued one when it joins.
  if (o.store === 'etcd') await openPki(etcdPkiDir(o.root)).client(n.name);
  ns.agentPid = startAgent(ctx.paths.flatnetd, n, o);
  writeState(state);
  ctx.progress(`node ${n.name}: flatnetd started (pid ${ns.agentPid}, log ${nodePaths(o.root, n.name).log})`);
}

/** Registers or deletes a Node through the API (from inside the fabric namespace: the only place it is reachable from). */
async function kubeNode(ctx: LabContext, o: LabOptions, verb: 'register' | 'delete', node: string): Promise<void> {
  const argv = [ctx.paths.self, '__kube-node', verb, '--node', node, '--kube-api', kubeApiEndpoint(), '--kube-token-file', kubeTokenFile(o.root)];
  const r = await run(inNetns(planFabric(o).netns, argv), { timeoutMs: 30_000 });
  if (r.code !== 0) throw new LabError(`${verb} Node ${node}: ${r.stderr.trim()}`);
}

async function addPodTo(ctx: LabContext, state: LabState, nodeName: string, requested?: string): Promise<PodState> {
  const o = state.options;
  const node = nodeState(state, nodeName);
  const name = choosePodName(o.prefix, node.name, state.pods.map((p) => p.name), requested);
  const host = cniHost(ctx, o, node.name, node.netns);
  const list = await loadConflist(host.confDir);
  if (!list) throw new LabError(`node ${node.name} has no conflist in ${host.confDir} yet (is its agent ready? see ${nodePaths(o.root, node.name).log})`);
  const containerID = randomBytes(32).toString('hex');
  const rt: RuntimeConf = {
    containerID,
    netns: `/run/netns/${name}`,
    ifname: POD_IFNAME,
    args: kubernetesArgs(name, containerID, randomUUID()),
    capabilityArgs: {},
  };
  await setupPodNetns(name);
  let result;
  try {
    result = await addNetworkList(host, list, rt);
  } catch (e) {
    // A runtime tears the sandbox down when ADD fails; so does the lab.
    await removeNetns(name);
    throw new LabError(`CNI ADD for pod ${name} on ${node.name} failed: ${(e as Error).message}`, { cause: e });
  }
  const pod: PodState = { name, netns: name, node: node.name, containerID, ifname: POD_IFNAME, ips: resultIPs(result) };
  state.pods.push(pod);
  state.pods.sort((a, b) => nodeOrder(state, a.node) - nodeOrder(state, b.node) || a.name.localeCompare(b.name, 'en', { numeric: true }));
  writeState(state);
  ctx.progress(`pod ${name} on ${node.name}: ${pod.ips.join(', ')}`);
  return pod;
}

/** Stops every process and removes every namespace with the prefix and the lab root. Safe to repeat. */
export async function down(ctx: LabContext, prefix: string, root: string): Promise<void> {
  let state: LabState | undefined;
  try {
    state = readState(root);
  } catch (e) {
    ctx.progress(`state unreadable (${(e as Error).message}); removing by prefix ${prefix}`);
  }
  const pids = [...(state?.nodes.map((n) => n.agentPid) ?? []), state?.etcdPid, state?.kubeApiPid].filter((p): p is number => p !== undefined && isLabProcess(p, root));
  if (pids.length) {
    ctx.progress(`stopping ${pids.length} process(es): ${pids.join(', ')}`);
    await stopPids(pids);
  }
  const namespaces = await listNetns(prefix);
  // A node's agent that was killed (not stopped) left its plugin socket behind.
  for (const n of namespaces) if (/^n[0-9]+$/.test(n.slice(prefix.length))) removeStaleCniSocket(`/run/netns/${n}`);
  if (namespaces.length) ctx.progress(`removing ${namespaces.length} namespace(s) with prefix ${prefix}`);
  // Pods first, then nodes, the outside host and last the fabric: the order a real cluster goes away in.
  const rank = (n: string): number => {
    const rest = n.slice(prefix.length);
    return rest === 'fabric' ? 3 : rest === 'out' ? 2 : /^n[0-9]+$/.test(rest) ? 1 : 0;
  };
  for (const r of [0, 1, 2, 3]) {
    const group = namespaces.filter((n) => rank(n) === r);
    for (let i = 0; i < group.length; i += 8) await Promise.all(group.slice(i, i + 8).map(removeNetns));
  }
  if (existsSync(root)) {
    if (existsSync(`${root}/${ROOT_MARKER}`) || existsSync(statePath(root)) || readdirSync(root).length === 0) {
      rmSync(root, { recursive: true, force: true });
    } else {
      ctx.progress(`not removing ${root}: it is not a lab root (no ${ROOT_MARKER})`);
    }
  }
}

export async function addNode(ctx: LabContext, root: string, pods?: number): Promise<NodeState> {
  const state = requireState(root);
  const o = state.options;
  const index = nextNodeIndex(state.nodes.map((n) => n.index));
  const plan = planNode(index, o);
  await startNode(ctx, state, plan);
  const ns = nodeState(state, plan.name);
  await waitAgentReady(o.root, plan.name, ns.agentPid ?? 0, AGENT_READY_TIMEOUT_MS);
  ctx.progress(`node ${plan.name}: agent ready`);
  for (let j = 0; j < (pods ?? o.pods); j++) await addPodTo(ctx, state, plan.name);
  await waitConverged(ctx, state);
  return ns;
}

export async function addPod(ctx: LabContext, root: string, node: string, name?: string): Promise<PodState> {
  const state = requireState(root);
  const n = state.nodes.find((x) => x.name === node || x.netns === node || x.index === nodeIndexOf(node));
  if (!n) throw new LabError(`no node "${node}" (nodes: ${state.nodes.map((x) => x.name).join(', ')})`);
  return addPodTo(ctx, state, n.name, name);
}

async function deletePod(ctx: LabContext, state: LabState, pod: PodState): Promise<void> {
  const o = state.options;
  const node = state.nodes.find((n) => n.name === pod.node);
  if (node) {
    const host = cniHost(ctx, o, node.name, node.netns);
    const rt: RuntimeConf = { containerID: pod.containerID, netns: `/run/netns/${pod.netns}`, ifname: pod.ifname, args: kubernetesArgs(pod.name, pod.containerID, ''), capabilityArgs: {} };
    try {
      await delNetworkList(host, NETWORK_NAME, rt);
    } catch (e) {
      if (!(e instanceof CniCallError)) throw e;
      ctx.progress(`pod ${pod.name}: CNI DEL failed (${e.message}); removing its namespace anyway`);
    }
  }
  await removeNetns(pod.netns);
  state.pods = state.pods.filter((p) => p.name !== pod.name);
  writeState(state);
  ctx.progress(`pod ${pod.name}: deleted`);
}

export async function removePod(ctx: LabContext, root: string, name: string): Promise<void> {
  const state = requireState(root);
  const pod = state.pods.find((p) => p.name === name || p.name === `${state.options.prefix}${name}`);
  if (!pod) throw new LabError(`no pod "${name}" (pods: ${state.pods.map((p) => p.name).join(', ') || 'none'})`);
  await deletePod(ctx, state, pod);
}

/** DEL the node's pods, stop its agent, release its lease through the store, delete its namespace. */
export async function removeNode(ctx: LabContext, root: string, name: string): Promise<void> {
  const state = requireState(root);
  const o = state.options;
  const node = state.nodes.find((n) => n.name === name || n.netns === name);
  if (!node) throw new LabError(`no node "${name}" (nodes: ${state.nodes.map((n) => n.name).join(', ')})`);
  for (const pod of state.pods.filter((p) => p.node === node.name)) await deletePod(ctx, state, pod);
  if (node.agentPid !== undefined && isLabProcess(node.agentPid, root)) {
    await stopPids([node.agentPid]);
    ctx.progress(`node ${node.name}: agent stopped`);
  }
  if (o.store === 'kubernetes') {
    // What removing a node from a Kubernetes cluster is: its Node object is deleted, and its podCIDRs with it.
    await kubeNode(ctx, o, 'delete', node.name);
    ctx.progress(`node ${node.name}: Node deleted from the API server stand-in`);
  } else {
    const release = [ctx.paths.self, '__release-lease', '--node', node.name, ...(o.store === 'etcd' ? ['--store', 'etcd', '--etcd-endpoints', etcdEndpoint(), '--lab-root', root] : ['--store', 'embedded', '--store-dir', storeDir(root)])];
    // etcd listens only inside the fabric namespace; the embedded store is a directory, reachable from anywhere.
    const r = await run(o.store === 'etcd' ? inNetns(planFabric(o).netns, release) : release, { timeoutMs: 30_000 });
    if (r.code !== 0) throw new LabError(`releasing the lease of ${node.name} failed: ${r.stderr.trim()}`);
    ctx.progress(`node ${node.name}: lease released`);
  }
  await removeNetns(node.netns);
  rmSync(nodePaths(root, node.name).dir, { recursive: true, force: true });
  state.nodes = state.nodes.filter((n) => n.name !== node.name);
  writeState(state);
  ctx.progress(`node ${node.name}: namespace removed; peers converge on their next resync or store event`);
}

/**
 * Starts a node's agent again exactly the way `up` and `add-node` start it (same argv, same log), after it
 * died or was stopped, records the new pid and waits for its /readyz. Refuses while the recorded agent
 * still runs. The fault-injection tests use it to restart an agent they killed.
 */
export async function restartAgent(ctx: LabContext, root: string, name: string, timeoutMs = AGENT_READY_TIMEOUT_MS): Promise<NodeState> {
  const state = requireState(root);
  const o = state.options;
  const node = nodeState(state, name);
  if (node.agentPid !== undefined && isAlive(node.agentPid) && isLabProcess(node.agentPid, root)) {
    throw new LabError(`the agent of ${node.name} still runs (pid ${node.agentPid})`);
  }
  node.agentPid = startAgent(ctx.paths.flatnetd, planNode(node.index, o), o);
  writeState(state);
  ctx.progress(`node ${node.name}: flatnetd restarted (pid ${node.agentPid})`);
  await waitAgentReady(root, node.name, node.agentPid, timeoutMs);
  return node;
}

/** Starts the lab's etcd again on its data (after it died or was killed), records its pid and waits until it is healthy. */
export async function restartEtcd(ctx: LabContext, root: string): Promise<number> {
  const state = requireState(root);
  const o = state.options;
  if (o.store !== 'etcd') throw new LabError('this lab does not use etcd');
  if (state.etcdPid !== undefined && isAlive(state.etcdPid) && isLabProcess(state.etcdPid, root)) {
    throw new LabError(`etcd still runs (pid ${state.etcdPid})`);
  }
  const fabric = planFabric(o).netns;
  state.etcdPid = startEtcd(fabric, root);
  writeState(state);
  ctx.progress(`etcd restarted on its data (pid ${state.etcdPid})`);
  await waitEtcdHealthy(fabric, state.etcdPid, root);
  return state.etcdPid;
}
