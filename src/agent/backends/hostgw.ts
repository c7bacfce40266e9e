// host-gw: every peer's pod subnet is routed via the peer's underlay address. One route per peer
// and family, nothing else; it only works when the peer is on the same L2 segment as this node's
// uplink (the gateway must be on-link). Peers that are not get no route and are reported as
// unreachable, which the agent logs, counts and shows in status (kindnet crashed here instead).
import { contains, formatIP, tryParsePrefix } from '../../net/ip.ts';
import type { NodeLease } from '../../store/types.ts';
import type { DesiredRoute, DesiredState, UnreachablePeer } from '../desired.ts';
import { routablePeerSubnets, underlayOf } from './peer-subnets.ts';

export interface HostGwFacts {
  readonly clusterCIDRs: readonly string[];
  /** The uplink device name (routes name it explicitly so a stray route cannot pick another device). */
  readonly uplink: string;
  /** The uplink's addresses with prefix length ("172.29.0.1/24"): what is on-link. */
  readonly uplinkPrefixes: readonly string[];
}

export function desiredHostGw(self: NodeLease, peers: readonly NodeLease[], facts: HostGwFacts): DesiredState {
  const onLink = facts.uplinkPrefixes.flatMap((t) => {
    const p = tryParsePrefix(t);
    return p ? [p] : [];
  });
  const { subnets, unreachable } = routablePeerSubnets(self, peers, facts.clusterCIDRs);
  const routes: DesiredRoute[] = [];
  const skipped: UnreachablePeer[] = [...unreachable];
  // First lease wins for a duplicated name, as in routablePeerSubnets.
  const byName = new Map([...peers].reverse().map((p) => [p.node, p]));
  for (const s of subnets) {
    const peer = byName.get(s.node);
    const gw = peer && underlayOf(peer, s.family);
    if (!gw) {
      skipped.push({ node: s.node, family: s.family, reason: `no IPv${s.family} underlay address published` });
      continue;
    }
    if (!onLink.some((p) => contains(p, gw))) {
      skipped.push({
        node: s.node,
        family: s.family,
        reason: `underlay ${formatIP(gw)} is not on-link on ${facts.uplink} (host-gw needs L2 adjacency; use vxlan)`,
      });
      continue;
    }
    routes.push({ family: s.family, dst: s.cidr, gateway: formatIP(gw), dev: facts.uplink, onlink: false, node: s.node });
  }
  return { routes, neighbours: [], fdb: [], unreachable: skipped };
}
