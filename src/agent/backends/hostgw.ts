// host-gw: every peer's pod subnet is routed via the peer's underlay address. One route per peer
// and family, nothing else; it only works when the peer is on the same L2 segment as this node's
// uplink (the gateway must be on-link). Peers that are not get no route and are reported as
// unreachable, which the agent logs, counts and shows in status (kindnet crashed here instead).
import { formatIP, tryParsePrefix } from '../../net/ip.ts';
import type { IP } from '../../net/ip.ts';
import type { NodeLease } from '../../store/types.ts';
import type { DesiredRoute, DesiredState, UnreachablePeer } from '../desired.ts';
import { preparePrefix, routablePeerSubnets, underlayOf, within } from './peer-subnets.ts';

export interface HostGwFacts {
  readonly clusterCIDRs: readonly string[];
  /** The uplink device name (routes name it explicitly so a stray route cannot pick another device). */
  readonly uplink: string;
  /** The uplink's addresses with prefix length ("172.29.0.1/24"): what is on-link. */
  readonly uplinkPrefixes: readonly string[];
}

/** Gateway text per parsed underlay address (those are kept per lease object, see underlayOf). */
const gatewayText = new WeakMap<IP, string>();

function formatGateway(ip: IP): string {
  let text = gatewayText.get(ip);
  if (text === undefined) {
    text = formatIP(ip);
    gatewayText.set(ip, text);
  }
  return text;
}

export function desiredHostGw(self: NodeLease, peers: readonly NodeLease[], facts: HostGwFacts): DesiredState {
  const onLink = facts.uplinkPrefixes.flatMap((t) => {
    const p = tryParsePrefix(t);
    return p ? [preparePrefix(p)] : [];
  });
  const { subnets, unreachable } = routablePeerSubnets(self, peers, facts.clusterCIDRs);
  const routes: DesiredRoute[] = [];
  const skipped: UnreachablePeer[] = [...unreachable];
  // First lease wins for a duplicated name, as in routablePeerSubnets.
  const byName = new Map<string, NodeLease>();
  for (const p of peers) if (!byName.has(p.node)) byName.set(p.node, p);
  for (const s of subnets) {
    const peer = byName.get(s.node);
    const gw = peer && underlayOf(peer, s.family);
    if (!gw) {
      skipped.push({ node: s.node, family: s.family, reason: `no IPv${s.family} underlay address published` });
      continue;
    }
    if (!onLink.some((p) => within(p, gw))) {
      skipped.push({
        node: s.node,
        family: s.family,
        reason: `underlay ${formatIP(gw)} is not on-link on ${facts.uplink} (host-gw needs L2 adjacency; use vxlan)`,
      });
      continue;
    }
    routes.push({ family: s.family, dst: s.cidr, gateway: formatGateway(gw), dev: facts.uplink, onlink: false, node: s.node });
  }
  return { routes, neighbours: [], fdb: [], unreachable: skipped };
}
