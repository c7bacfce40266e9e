// Builds and removes the lab's namespaces and the underlay between them. Every change happens inside a
// namespace whose name carries the lab's prefix: the root namespace keeps its sysctls, routes and rules.
// Each namespace is configured with one `ip -batch` (a spawn is ~5 ms; a batch does a dozen steps in
// one), and every veth is created with its far end directly in the target namespace (moving a link
// between namespaces costs 17-20 ms of kernel time).
import { run, runOk } from '../linux/run.ts';
import type { FabricPlan, NodePlan, OutsidePlan } from './topology.ts';
import { UPLINK } from './topology.ts';
import { stopPids } from './processes.ts';

export class NamespaceError extends Error {
  override readonly name = 'NamespaceError';
}

const isV6 = (a: string): boolean => a.includes(':');

async function batch(netns: string, lines: readonly string[], what: string): Promise<void> {
  const r = await run(['ip', '-n', netns, '-batch', '-'], { input: lines.join('\n') + '\n' });
  if (r.code !== 0) throw new NamespaceError(`${what} (in ${netns}) failed: ${r.stderr.trim()}`);
}

async function sysctls(netns: string, settings: readonly string[]): Promise<void> {
  const r = await run(['ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w', ...settings]);
  if (r.code !== 0) throw new NamespaceError(`sysctl in ${netns} failed: ${r.stderr.trim()}`);
}

/** Creates a namespace with lo up. */
export async function addNetns(name: string): Promise<void> {
  const r = await run(['ip', 'netns', 'add', name]);
  if (r.code !== 0) throw new NamespaceError(`cannot create namespace ${name}: ${r.stderr.trim()}`);
  await batch(name, ['link set lo up'], 'bringing lo up');
}

/** Every namespace whose name starts with prefix. */
export async function listNetns(prefix: string): Promise<string[]> {
  const r = await runOk(['ip', '-j', 'netns', 'list']);
  const text = r.stdout.trim();
  if (text === '') return [];
  const list = JSON.parse(text) as { name?: unknown }[];
  return list.map((e) => e.name).filter((n): n is string => typeof n === 'string' && n.startsWith(prefix));
}

export async function netnsPids(name: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', name]);
  return r.stdout.split('\n').map((l) => Number(l.trim())).filter((p) => Number.isInteger(p) && p > 1);
}

/** Ends every process inside the namespace (by pid) and deletes it; a missing namespace is fine. */
export async function removeNetns(name: string): Promise<void> {
  await stopPids(await netnsPids(name), 2_000);
  const r = await run(['ip', 'netns', 'del', name]);
  if (r.code !== 0 && !/No such file|not found/i.test(r.stderr)) throw new NamespaceError(`cannot delete namespace ${name}: ${r.stderr.trim()}`);
}

/** The fabric: one bridge per segment, router for the segments and the outside host. */
export async function setupFabric(plan: FabricPlan, ipv6: boolean): Promise<void> {
  await addNetns(plan.netns);
  const lines: string[] = [];
  for (const s of plan.segments) {
    lines.push(`link add ${s.bridge} type bridge`, `link set ${s.bridge} up`, `addr add ${s.gatewayV4}/24 dev ${s.bridge}`);
    if (ipv6) lines.push(`addr add ${s.gatewayV6}/64 dev ${s.bridge} nodad`);
  }
  await batch(plan.netns, lines, 'fabric bridges');
  await sysctls(plan.netns, ['net.ipv4.ip_forward=1', ...(ipv6 ? ['net.ipv6.conf.all.forwarding=1'] : [])]);
}

/** The outside host on its own link to the fabric. Nothing routes pod CIDRs back to it. */
export async function setupOutside(plan: OutsidePlan, fabricNetns: string): Promise<void> {
  await addNetns(plan.netns);
  const r = await run(['ip', '-n', fabricNetns, 'link', 'add', plan.fabricPort, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', plan.netns]);
  if (r.code !== 0) throw new NamespaceError(`cannot create the outside link: ${r.stderr.trim()}`);
  const fab = [`link set ${plan.fabricPort} up`];
  for (const a of plan.fabricIPs) fab.push(isV6(a) ? `addr add ${a}/64 dev ${plan.fabricPort} nodad` : `addr add ${a}/24 dev ${plan.fabricPort}`);
  await batch(fabricNetns, fab, 'fabric side of the outside link');
  const out = [`link set ${UPLINK} up`];
  plan.ips.forEach((a) => out.push(isV6(a) ? `addr add ${a}/64 dev ${UPLINK} nodad` : `addr add ${a}/24 dev ${UPLINK}`));
  for (const gw of plan.fabricIPs) out.push(`route add default via ${gw}`);
  await batch(plan.netns, out, 'outside host addresses');
}

/** A node: its namespace, its uplink eth0 on its segment's bridge, underlay addresses, default route to the fabric. */
export async function setupNode(node: NodePlan, fabricNetns: string): Promise<void> {
  await addNetns(node.netns);
  const r = await run(['ip', '-n', fabricNetns, 'link', 'add', node.fabricPort, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', node.netns]);
  if (r.code !== 0) throw new NamespaceError(`cannot create uplink of ${node.name}: ${r.stderr.trim()}`);
  await batch(fabricNetns, [`link set ${node.fabricPort} master ${node.segment.bridge}`, `link set ${node.fabricPort} up`], `attaching ${node.name} to ${node.segment.bridge}`);
  const lines = [`link set ${UPLINK} up`];
  for (const a of node.underlayIPs) lines.push(isV6(a) ? `addr add ${a}/64 dev ${UPLINK} nodad` : `addr add ${a}/24 dev ${UPLINK}`);
  lines.push(`route add default via ${node.segment.gatewayV4}`);
  if (node.underlayIPs.some(isV6)) lines.push(`route add default via ${node.segment.gatewayV6}`);
  await batch(node.netns, lines, `uplink of ${node.name}`);
}

/** A pod's empty namespace, as a runtime creates the sandbox before calling CNI ADD. */
export async function setupPodNetns(netns: string): Promise<void> {
  await addNetns(netns);
}
