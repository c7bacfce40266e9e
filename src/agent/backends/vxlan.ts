// VXLAN backend (flannel's design): one device flat.vx (VNI 4242, UDP 8472, learning off, no
// miss handlers). Its address is this node's pod subnet network address (/32, /128). For every
// peer and pod family the kernel gets, in this order:
//   1. neighbour  peer-subnet-network-address -> peer VTEP MAC   (permanent)
//   2. FDB        peer VTEP MAC -> peer underlay IP             (self, permanent)
//   3. route      peer subnet via peer-subnet-network-address dev flat.vx onlink proto 241
// Because 1 and 2 exist before 3, the kernel never needs ARP/NDP or flooding on the overlay.
// Cost per peer: one FDB entry, plus one neighbour and one route per pod family (≤ 5 entries).
// The underlay family is that of the device's `local` address; IPv4 and IPv6 pod traffic both
// ride it. The VTEP MAC is derived from the node name so it is stable across agent restarts.
import { createHash } from 'node:crypto';
import { formatIP, formatPrefix, networkOf, tryParseIP, tryParsePrefix } from '../../net/ip.ts';
import type { Family } from '../../net/ip.ts';
import type { NodeLease } from '../../store/types.ts';
import { VXLAN_DEVICE, canonicalUnicastMAC } from '../desired.ts';
import type { DesiredFdb, DesiredNeighbour, DesiredRoute, DesiredState, UnreachablePeer } from '../desired.ts';
import { routablePeerSubnets, underlayOf } from './peer-subnets.ts';

export interface VxlanFacts {
  readonly clusterCIDRs: readonly string[];
  /** The family of this node's VTEP underlay address (the device's `local`). */
  readonly underlayFamily: Family;
  readonly device?: string;
}

export function desiredVxlan(self: NodeLease, peers: readonly NodeLease[], facts: VxlanFacts): DesiredState {
  const dev = facts.device ?? VXLAN_DEVICE;
  const { subnets, unreachable } = routablePeerSubnets(self, peers, facts.clusterCIDRs);
  const routes: DesiredRoute[] = [];
  const neighbours: DesiredNeighbour[] = [];
  const fdb: DesiredFdb[] = [];
  const skipped: UnreachablePeer[] = [...unreachable];
  const fdbDone = new Set<string>();
  const macOwner = new Map<string, string>();
  // First lease wins for a duplicated name, as in routablePeerSubnets.
  const byName = new Map([...peers].reverse().map((p) => [p.node, p]));
  for (const s of subnets) {
    const peer = byName.get(s.node);
    if (!peer) continue;
    if (peer.backend !== 'vxlan') {
      skipped.push({ node: s.node, family: s.family, reason: `peer runs backend ${peer.backend}, this node vxlan` });
      continue;
    }
    const mac = peer.vtepMAC === undefined ? undefined : canonicalUnicastMAC(peer.vtepMAC);
    if (!mac) {
      skipped.push({ node: s.node, family: s.family, reason: `no valid VTEP MAC published (${peer.vtepMAC ?? 'none'})` });
      continue;
    }
    const owner = macOwner.get(mac);
    if (owner !== undefined && owner !== s.node) {
      skipped.push({ node: s.node, family: s.family, reason: `VTEP MAC ${mac} is also used by ${owner}` });
      continue;
    }
    const underlay = underlayOf(peer, facts.underlayFamily);
    if (!underlay) {
      skipped.push({ node: s.node, family: s.family, reason: `no IPv${facts.underlayFamily} underlay address published` });
      continue;
    }
    macOwner.set(mac, s.node);
    neighbours.push({ family: s.family, dev, ip: s.network, mac, node: s.node });
    if (!fdbDone.has(mac)) {
      fdbDone.add(mac);
      fdb.push({ dev, mac, dst: formatIP(underlay), node: s.node });
    }
    routes.push({ family: s.family, dst: s.cidr, gateway: s.network, dev, onlink: true, node: s.node });
  }
  return { routes, neighbours, fdb, unreachable: skipped };
}

/** Addresses of the VXLAN device: each pod subnet's network address as a host prefix. */
export function vxlanDeviceAddresses(podCIDRs: readonly string[]): string[] {
  const out: string[] = [];
  for (const t of podCIDRs) {
    const p = tryParsePrefix(t);
    if (!p) continue;
    out.push(formatPrefix({ ip: networkOf(p), length: p.ip.family === 4 ? 32 : 128 }));
  }
  return out;
}

/**
 * This node's VTEP MAC: derived from the node name (sha256), locally administered and unicast, so
 * a restarted agent (or a recreated device) keeps the MAC its peers already have in their tables.
 */
export function vtepMACFor(node: string): string {
  const h = createHash('sha256').update(`flatnet-vtep:${node}`).digest();
  const bytes = [...h.subarray(0, 6)];
  bytes[0] = ((bytes[0] ?? 0) & 0xfc) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** The VTEP's local underlay address: the node's first IPv4 underlay address, else its first IPv6 one. */
export function vtepLocalAddress(self: NodeLease): string | undefined {
  const ips = self.underlayIPs.flatMap((t) => {
    const ip = tryParseIP(t);
    return ip ? [ip] : [];
  });
  const chosen = ips.find((ip) => ip.family === 4) ?? ips[0];
  return chosen ? formatIP(chosen) : undefined;
}
