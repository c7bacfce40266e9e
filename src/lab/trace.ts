// `lab trace SRC DST`: the path a packet takes, hop by hop, from the kernel's own decisions. In each
// namespace it asks `ip -j route get DST from SRC [iif DEV]`; to leave a namespace it follows the output
// device: a veth goes to its peer (the lab knows both ends), a bridge forwards by its FDB (`bridge -j fdb`
// for the next hop's MAC from `ip -j neigh`) to a port or up to its own stack, and the VXLAN device maps
// the next hop's MAC to a remote VTEP (its FDB), after which the outer packet is traced the same way to
// the peer node and the inner packet continues there. Nothing is sent.
import { inNetns, run } from '../linux/run.ts';
import { hostVethName } from '../plugin/names.ts';
import { requireState } from './lab.ts';
import type { LabState } from './state.ts';
import { contains, parsePrefix, tryParseIP } from '../net/ip.ts';
import { UPLINK, clusterCIDRs, VXLAN_DEVICE, nodeIndexOf, planFabric, planNode, planOutside } from './topology.ts';

export class TraceError extends Error {
  override readonly name = 'TraceError';
}

export interface Endpoint {
  readonly label: string;
  readonly netns: string;
  readonly ips: readonly string[];
}

interface RouteAnswer {
  readonly ok: boolean;
  readonly error?: string;
  readonly type?: string;
  readonly dev?: string;
  readonly gateway?: string;
  readonly prefsrc?: string;
}

const familyOf = (a: string): 4 | 6 => (a.includes(':') ? 6 : 4);

/** Every namespace of the lab with the addresses that identify it. */
export function endpointsOf(state: LabState): Endpoint[] {
  const o = state.options;
  const out = planOutside(o);
  return [
    ...state.pods.map((p) => ({ label: p.name, netns: p.netns, ips: p.ips })),
    ...state.nodes.map((n) => ({ label: n.name, netns: n.netns, ips: n.underlayIPs })),
    { label: 'outside', netns: out.netns, ips: out.ips },
  ];
}

/** SRC/DST as given on the command line: pod name (with or without prefix), node name or netns, "outside", or an address. */
export function resolveEndpoint(state: LabState, text: string): Endpoint & { readonly addr?: string } {
  const prefix = state.options.prefix;
  const all = endpointsOf(state);
  const byName = all.find((e) => e.label === text || e.netns === text || e.label === `${prefix}${text}` || (text === `${prefix}out` && e.label === 'outside'));
  if (byName) return byName;
  const byAddr = all.find((e) => e.ips.includes(text));
  if (byAddr) return { ...byAddr, addr: text };
  if (/^[0-9a-f.:]+$/i.test(text)) return { label: text, netns: '', ips: [text], addr: text };
  throw new TraceError(`"${text}" is not a pod, node or address of this lab (pods: ${state.pods.map((p) => p.name).join(', ')}; nodes: ${state.nodes.map((n) => n.name).join(', ')}; outside)`);
}

async function routeGet(netns: string, dst: string, src: string | undefined, iif: string | undefined): Promise<RouteAnswer> {
  const argv = ['ip', '-j', 'route', 'get', dst];
  if (src !== undefined) argv.push('from', src);
  if (iif !== undefined) argv.push('iif', iif);
  const r = await run(inNetns(netns, argv));
  if (r.code !== 0) return { ok: false, error: r.stderr.replace(/^RTNETLINK answers: /, '').trim() };
  const [route] = JSON.parse(r.stdout) as Record<string, unknown>[];
  const str = (k: string): string | undefined => (typeof route?.[k] === 'string' ? (route[k]) : undefined);
  const type = str('type');
  const dev = str('dev');
  const gateway = str('gateway');
  const prefsrc = str('prefsrc');
  return { ok: true, ...(type ? { type } : {}), ...(dev ? { dev } : {}), ...(gateway ? { gateway } : {}), ...(prefsrc ? { prefsrc } : {}) };
}

async function neighMac(netns: string, dev: string, ip: string): Promise<{ mac?: string; state: string }> {
  const r = await run(inNetns(netns, ['ip', '-j', 'neigh', 'show', 'to', ip, 'dev', dev]));
  const [n] = r.code === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as { lladdr?: string; state?: string[] }[]) : [];
  return { ...(n?.lladdr ? { mac: n.lladdr } : {}), state: n?.state?.join(',') ?? 'none' };
}

async function linkInfo(netns: string, dev: string): Promise<{ master?: string; address?: string; kind?: string } | undefined> {
  const r = await run(inNetns(netns, ['ip', '-j', '-d', 'link', 'show', 'dev', dev]));
  if (r.code !== 0) return undefined;
  const [l] = JSON.parse(r.stdout) as { master?: string; address?: string; linkinfo?: { info_kind?: string } }[];
  return { ...(l?.master ? { master: l.master } : {}), ...(l?.address ? { address: l.address } : {}), ...(l?.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}) };
}

async function fdbPort(netns: string, bridge: string, mac: string): Promise<{ port?: string; self: boolean }> {
  const r = await run(inNetns(netns, ['bridge', '-j', 'fdb', 'show', 'br', bridge]));
  const entries = r.code === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as { mac?: string; ifname?: string; flags?: string[]; state?: string }[]) : [];
  const hit = entries.find((e) => e.mac?.toLowerCase() === mac.toLowerCase() && e.ifname !== undefined);
  const br = await linkInfo(netns, bridge);
  const self = br?.address?.toLowerCase() === mac.toLowerCase() || (hit?.ifname === bridge);
  return { ...(hit?.ifname && hit.ifname !== bridge ? { port: hit.ifname } : {}), self };
}

async function vxlanRemote(netns: string, mac: string): Promise<string | undefined> {
  const r = await run(inNetns(netns, ['bridge', '-j', 'fdb', 'show', 'dev', VXLAN_DEVICE]));
  const entries = r.code === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as { mac?: string; dst?: string }[]) : [];
  return entries.find((e) => e.mac?.toLowerCase() === mac.toLowerCase() && e.dst)?.dst;
}

/** The lab knows both ends of each of its veth pairs. */
function vethPeer(state: LabState, netns: string, ifname: string): { netns: string; ifname: string } | undefined {
  const o = state.options;
  const fabric = planFabric(o).netns;
  const outside = planOutside(o);
  const pod = state.pods.find((p) => p.netns === netns);
  if (pod && ifname === pod.ifname) {
    const node = state.nodes.find((n) => n.name === pod.node);
    return node ? { netns: node.netns, ifname: hostVethName(pod.containerID, pod.ifname) } : undefined;
  }
  const node = state.nodes.find((n) => n.netns === netns);
  if (node) {
    if (ifname === UPLINK) return { netns: fabric, ifname: planNode(node.index, o).fabricPort };
    const p = state.pods.find((x) => x.node === node.name && hostVethName(x.containerID, x.ifname) === ifname);
    return p ? { netns: p.netns, ifname: p.ifname } : undefined;
  }
  if (netns === outside.netns && ifname === UPLINK) return { netns: fabric, ifname: outside.fabricPort };
  if (netns === fabric) {
    if (ifname === outside.fabricPort) return { netns: outside.netns, ifname: UPLINK };
    const m = /^fab-(n[0-9]+)$/.exec(ifname);
    const n = m ? state.nodes.find((x) => x.index === nodeIndexOf(m[1]!)) : undefined;
    return n ? { netns: n.netns, ifname: UPLINK } : undefined;
  }
  return undefined;
}

function inCluster(state: LabState, addr: string): boolean {
  const ip = tryParseIP(addr);
  return ip !== undefined && clusterCIDRs(state.options.ipv6).some((c) => contains(parsePrefix(c), ip));
}

interface Position {
  readonly netns: string;
  readonly iif?: string;
}

/**
 * Walks one packet (src -> dst) from `start` until it is delivered locally or dropped; appends hops.
 * Returns the namespace where it was delivered, or undefined.
 */
async function walk(state: LabState, start: Position, src: string | undefined, dst: string, hops: string[], depth = 0): Promise<string | undefined> {
  let pos: Position = start;
  const indent = '  '.repeat(depth);
  for (let step = 0; step < 16; step++) {
    const rg = await routeGet(pos.netns, dst, src, pos.iif);
    const where = `${pos.netns}${pos.iif ? ` (in ${pos.iif})` : ''}`;
    if (!rg.ok) {
      hops.push(`${indent}✗ ${where}: route get ${dst}${src ? ` from ${src}` : ''}: ${rg.error}`);
      return undefined;
    }
    if (rg.type === 'local') {
      hops.push(`${indent}● ${where}: ${dst} is local: delivered`);
      return pos.netns;
    }
    if (rg.type && rg.type !== 'unicast') {
      hops.push(`${indent}✗ ${where}: route ${rg.type} for ${dst}`);
      return undefined;
    }
    const dev = rg.dev ?? '?';
    const next = rg.gateway ?? dst;
    hops.push(`${indent}→ ${where}: route ${dst}${src ? ` from ${src}` : ''} ${rg.gateway ? `via ${rg.gateway} ` : ''}dev ${dev}${rg.prefsrc && !src ? ` src ${rg.prefsrc}` : ''}`);
    src ??= rg.prefsrc;
    // Masquerade is an nftables decision route get does not show: a pod packet leaving its node's uplink
    // for a destination outside the cluster leaves with the node's address (table inet flatnet).
    const node = state.nodes.find((n) => n.netns === pos.netns);
    if (node && dev === UPLINK && src !== undefined && inCluster(state, src) && !inCluster(state, dst) && rg.prefsrc) {
      hops.push(`${indent}  nat: table inet flatnet masquerades ${src} -> ${rg.prefsrc} (destination outside the cluster CIDRs)`);
      src = rg.prefsrc;
    }
    const link = await linkInfo(pos.netns, dev);
    const neigh = await neighMac(pos.netns, dev, next);
    if (link?.kind === 'vxlan' || dev === VXLAN_DEVICE) {
      const remote = neigh.mac ? await vxlanRemote(pos.netns, neigh.mac) : undefined;
      if (!neigh.mac || !remote) {
        hops.push(`${indent}✗ ${pos.netns} ${dev}: no ${!neigh.mac ? `neighbour entry for ${next}` : `VXLAN FDB entry for ${neigh.mac}`}`);
        return undefined;
      }
      hops.push(`${indent}⇢ ${pos.netns} ${dev}: ${next} is ${neigh.mac} (neigh ${neigh.state}), VXLAN FDB -> VTEP ${remote}; outer packet:`);
      const arrived = await walk(state, { netns: pos.netns }, undefined, remote, hops, depth + 1);
      if (!arrived) return undefined;
      pos = { netns: arrived, iif: dev };
      hops.push(`${indent}⇠ ${arrived} ${dev}: decapsulated`);
      continue;
    }
    // Leaving through a veth (a pod's eth0, a node's uplink, a bridge port is never an output device here).
    if (link?.kind === 'veth') {
      const peer = vethPeer(state, pos.netns, dev);
      if (!peer) {
        hops.push(`${indent}✗ ${pos.netns} ${dev}: veth peer unknown to the lab`);
        return undefined;
      }
      const peerLink = await linkInfo(peer.netns, peer.ifname);
      hops.push(`${indent}⇄ veth ${dev} -> ${peer.ifname} in ${peer.netns}${peerLink?.master ? ` (port of ${peerLink.master})` : ''}; ${next} is ${neigh.mac ?? '?'} (neigh ${neigh.state})`);
      if (!peerLink?.master) {
        pos = { netns: peer.netns, iif: peer.ifname };
        continue;
      }
      const landed = await acrossBridge(state, peer.netns, peerLink.master, neigh.mac, next, hops, indent);
      if (!landed) return undefined;
      pos = landed;
      continue;
    }
    // Leaving through a bridge this namespace owns (a node's flat0, the fabric's fab0/fab1).
    if (link?.kind === 'bridge') {
      const landed = await acrossBridge(state, pos.netns, dev, neigh.mac, next, hops, indent);
      if (!landed) return undefined;
      pos = landed;
      continue;
    }
    hops.push(`${indent}✗ ${pos.netns} ${dev}: device kind ${link?.kind ?? 'unknown'} not followed`);
    return undefined;
  }
  hops.push(`${indent}✗ too many hops (loop?)`);
  return undefined;
}

/** A frame for `mac` enters `bridge` in `netns`: up to the bridge's own stack, or out of the port its FDB names. */
async function acrossBridge(state: LabState, netns: string, bridge: string, mac: string | undefined, next: string, hops: string[], indent: string): Promise<Position | undefined> {
  if (!mac) {
    hops.push(`${indent}  bridge ${bridge} in ${netns}: no neighbour entry for ${next} yet (the kernel resolves it by ARP/ND on first use); following the lab's address plan`);
    const owner = endpointsOf(state).find((e) => e.ips.includes(next));
    return owner ? { netns: owner.netns } : { netns };
  }
  const fdb = await fdbPort(netns, bridge, mac);
  if (fdb.self) {
    hops.push(`${indent}  bridge ${bridge} in ${netns}: ${mac} is the bridge itself -> ${netns} routing`);
    return { netns, iif: bridge };
  }
  if (!fdb.port) {
    hops.push(`${indent}  bridge ${bridge} in ${netns}: ${mac} not in the FDB (would be flooded)`);
    const owner = endpointsOf(state).find((e) => e.ips.includes(next));
    return owner ? { netns: owner.netns } : undefined;
  }
  const peer = vethPeer(state, netns, fdb.port);
  hops.push(`${indent}  bridge ${bridge} in ${netns}: FDB ${mac} -> port ${fdb.port}${peer ? ` -> ${peer.ifname} in ${peer.netns}` : ''}`);
  return peer ? { netns: peer.netns, iif: peer.ifname } : undefined;
}

export async function trace(root: string, srcText: string, dstText: string): Promise<{ ok: boolean; text: string }> {
  const state = requireState(root);
  const src = resolveEndpoint(state, srcText);
  const dst = resolveEndpoint(state, dstText);
  if (!src.netns) throw new TraceError(`source ${srcText} must be a pod, a node or the outside host (a namespace to start in)`);
  const dstAddr = dst.addr ?? dst.ips[0];
  if (dstAddr === undefined) throw new TraceError(`${dstText} has no address`);
  const family = familyOf(dstAddr);
  const srcAddr = src.addr ?? src.ips.find((a) => familyOf(a) === family);
  // A node sends from whatever address its routing picks; a pod or the outside host from its own.
  const isNode = state.nodes.some((n) => n.netns === src.netns);
  const hops: string[] = [`trace ${src.label}${srcAddr && !isNode ? ` (${srcAddr})` : ''} -> ${dst.label} (${dstAddr})`];
  const delivered = await walk(state, { netns: src.netns }, isNode ? undefined : srcAddr, dstAddr, hops);
  const ok = delivered !== undefined && (dst.netns === '' || delivered === dst.netns);
  if (delivered && dst.netns && delivered !== dst.netns) hops.push(`✗ delivered in ${delivered}, not in ${dst.netns}`);
  hops.push(ok ? 'reached' : 'not reached');
  return { ok, text: hops.join('\n') };
}

