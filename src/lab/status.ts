// `lab status`: what the lab is, from state.json plus each agent's live answer. The JSON form is a
// stable contract for scripts and tests: nodes[].{name, netns, underlayIPs, podCIDRs, agent, pluginCalls},
// pods[].{name, netns, node, ips}, outside.{netns, ips}; addresses without prefix length, CIDRs with it.
import type { CniCallTally } from '../agent/cni-server.ts';
import { type AgentStatus, agentHealth, agentStatus } from './agents.ts';
import { loadConflist } from './cni-runtime.ts';
import { requireState } from './lab.ts';
import { nodePaths, planFabric, planNode, planOutside } from './topology.ts';

export interface StatusNode {
  readonly name: string;
  readonly netns: string;
  readonly segment: string;
  readonly underlayIPs: readonly string[];
  readonly podCIDRs: readonly string[];
  readonly agent: { readonly pid: number | null; readonly health: string };
  /** The plugin calls this node's agent served or declined; null when it is down or serves none. */
  readonly pluginCalls: CniCallTally | null;
}

export interface StatusReport {
  readonly root: string;
  readonly prefix: string;
  readonly phase: string;
  readonly options: { readonly backend: string; readonly store: string; readonly topology: string; readonly ipv6: boolean };
  readonly fabric: { readonly netns: string; readonly bridges: readonly string[] };
  readonly nodes: readonly StatusNode[];
  readonly pods: readonly { readonly name: string; readonly netns: string; readonly node: string; readonly ips: readonly string[]; readonly containerID: string }[];
  readonly outside: { readonly netns: string; readonly ips: readonly string[] };
}

/** The node's pod CIDRs: from its agent, else (agent down) from the conflist it wrote. */
async function podCIDRsOf(root: string, node: string, live: AgentStatus | undefined): Promise<string[]> {
  if (live?.podCIDRs.length) return [...live.podCIDRs];
  try {
    const list = await loadConflist(nodePaths(root, node).cniConfDir);
    const ipam = list?.plugins[0]?.raw['ipam'] as { ranges?: { subnet?: string }[][] } | undefined;
    return (ipam?.ranges ?? []).flatMap((set) => set.map((r) => r.subnet ?? '')).filter(Boolean);
  } catch {
    return [];
  }
}

export async function collectStatus(root: string): Promise<StatusReport> {
  const state = requireState(root);
  const o = state.options;
  const nodes = await Promise.all(
    state.nodes.map(async (n): Promise<StatusNode> => {
      const plan = planNode(n.index, o);
      const live = await agentStatus(root, n.name).catch(() => undefined);
      return {
        name: n.name,
        netns: n.netns,
        segment: plan.segment.bridge,
        underlayIPs: n.underlayIPs,
        podCIDRs: await podCIDRsOf(root, n.name, live),
        agent: { pid: n.agentPid ?? null, health: await agentHealth(root, n.name) },
        pluginCalls: live?.cniCalls ?? null,
      };
    }),
  );
  const outside = planOutside(o);
  return {
    root,
    prefix: o.prefix,
    phase: state.phase,
    options: { backend: o.backend, store: o.store, topology: o.topology, ipv6: o.ipv6 },
    fabric: { netns: planFabric(o).netns, bridges: planFabric(o).segments.map((s) => s.bridge) },
    nodes,
    pods: state.pods.map((p) => ({ name: p.name, netns: p.netns, node: p.node, ips: p.ips, containerID: p.containerID })),
    outside: { netns: outside.netns, ips: outside.ips },
  };
}

function table(rows: readonly (readonly string[])[]): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => '  ' + r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
}

/** "3 served, 0 declined" (with errors and undone ADDs when there were any), "-" when unknown. */
export function pluginCalls(c: CniCallTally | null): string {
  if (c === null) return '-';
  const extra = [c.error ? `${c.error} answered with an error` : '', c.undone ? `${c.undone} undone` : '', c.inFlight ? `${c.inFlight} in flight` : ''].filter(Boolean);
  return `${c.ok + c.error} served, ${c.declined} declined${extra.length ? ` (${extra.join(', ')})` : ''}`;
}

export function renderStatus(s: StatusReport): string {
  const lines = [`lab at ${s.root} (prefix ${s.prefix}, ${s.phase}): backend ${s.options.backend}, store ${s.options.store}, topology ${s.options.topology}${s.options.ipv6 ? ', dual-stack' : ''}`, ''];
  lines.push('nodes:');
  lines.push(...table([['NAME', 'NETNS', 'SEGMENT', 'UNDERLAY', 'POD CIDRS', 'PLUGIN CALLS', 'AGENT'], ...s.nodes.map((n) => [n.name, n.netns, n.segment, n.underlayIPs.join(','), n.podCIDRs.join(',') || '?', pluginCalls(n.pluginCalls), `${n.agent.health} (pid ${n.agent.pid ?? '?'})`])]));
  lines.push('', 'pods:');
  if (s.pods.length === 0) lines.push('  (none)');
  else lines.push(...table([['NAME', 'NODE', 'ADDRESSES'], ...s.pods.map((p) => [p.name, p.node, p.ips.join(', ')])]));
  lines.push('', `outside host: ${s.outside.netns} ${s.outside.ips.join(', ')}`, `fabric: ${s.fabric.netns} (${s.fabric.bridges.join(', ')})`);
  return lines.join('\n');
}
