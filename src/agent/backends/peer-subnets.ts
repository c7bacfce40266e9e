// Validation shared by the backends: which of a peer's pod subnets may be routed at all.
//
// A lease comes from the store and is only as trustworthy as every node that can write there, so
// a peer subnet is routed only if it is a canonical prefix inside a cluster CIDR and overlaps
// neither this node's subnets nor a subnet already claimed by another peer. Without this a bogus
// lease for "0.0.0.0/0" would replace the default route (`ip route replace` matches by prefix,
// not by protocol). Problems become UnreachablePeer entries, never exceptions.
import { contains, formatIP, formatPrefix, isNetwork, networkOf, tryParseIP, tryParsePrefix } from '../../net/ip.ts';
import { PrefixIndex } from '../../net/prefix-index.ts';
import type { Family, IP, Prefix } from '../../net/ip.ts';
import type { NodeLease } from '../../store/types.ts';
import type { UnreachablePeer } from '../desired.ts';

export interface PeerSubnet {
  readonly node: string;
  readonly family: Family;
  readonly prefix: Prefix;
  /** Canonical text of the prefix. */
  readonly cidr: string;
  /** Canonical text of the subnet's network address (the VXLAN gateway address). */
  readonly network: string;
}

export interface RoutablePeers {
  readonly subnets: readonly PeerSubnet[];
  readonly unreachable: UnreachablePeer[];
}

function parseCIDRs(texts: readonly string[]): Prefix[] {
  const out: Prefix[] = [];
  for (const t of texts) {
    const p = tryParsePrefix(t);
    if (p) out.push(p);
  }
  return out;
}

/**
 * Every routable (peer, family) subnet, in a stable order (by node name, then family), plus the
 * reasons for everything skipped. The node itself is skipped silently if it appears in `peers`.
 */
export function routablePeerSubnets(
  self: NodeLease,
  peers: readonly NodeLease[],
  clusterCIDRs: readonly string[],
): RoutablePeers {
  const clusters = parseCIDRs(clusterCIDRs);
  // Indexed, not scanned: with thousands of peers a scan per subnet made every reconcile O(n^2).
  const claimed = new PrefixIndex<true>();
  for (const p of parseCIDRs(self.podCIDRs)) claimed.add(p, true);
  const familiesOf = new Map<string, Set<Family>>();
  const subnets: PeerSubnet[] = [];
  const unreachable: UnreachablePeer[] = [];
  const sorted = [...peers].filter((p) => p.node !== self.node).sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  const seen = new Set<string>();
  for (const peer of sorted) {
    if (seen.has(peer.node)) {
      unreachable.push({ node: peer.node, reason: 'duplicate lease for this node name' });
      continue;
    }
    seen.add(peer.node);
    if (peer.podCIDRs.length === 0) {
      unreachable.push({ node: peer.node, reason: 'lease has no pod subnet' });
      continue;
    }
    for (const text of peer.podCIDRs) {
      const prefix = tryParsePrefix(text);
      if (!prefix || !isNetwork(prefix)) {
        unreachable.push({ node: peer.node, reason: `malformed pod subnet "${text}"` });
        continue;
      }
      const family = prefix.ip.family;
      const cidr = formatPrefix(prefix);
      if (!clusters.some((c) => c.ip.family === family && c.length <= prefix.length && contains(c, prefix.ip))) {
        unreachable.push({ node: peer.node, family, reason: `pod subnet ${cidr} is outside the cluster CIDRs` });
        continue;
      }
      const fams = familiesOf.get(peer.node) ?? new Set<Family>();
      familiesOf.set(peer.node, fams);
      if (fams.has(family)) {
        unreachable.push({ node: peer.node, family, reason: `more than one IPv${family} pod subnet; ${cidr} ignored` });
        continue;
      }
      if (claimed.firstOverlap(prefix) !== undefined) {
        unreachable.push({ node: peer.node, family, reason: `pod subnet ${cidr} overlaps this node's or another peer's subnet` });
        continue;
      }
      claimed.add(prefix, true);
      fams.add(family);
      subnets.push({ node: peer.node, family, prefix, cidr, network: formatIP(networkOf(prefix)) });
    }
  }
  return { subnets, unreachable };
}

/** The peer's published underlay address of a family, parsed; undefined if it has none (or only malformed ones). */
export function underlayOf(peer: NodeLease, family: Family): IP | undefined {
  for (const text of peer.underlayIPs) {
    const ip = tryParseIP(text);
    if (ip && ip.family === family) return ip;
  }
  return undefined;
}
