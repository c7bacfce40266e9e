// Validation shared by the backends: which of a peer's pod subnets may be routed at all.
//
// A lease comes from the store and is only as trustworthy as every node that can write there, so
// a peer subnet is routed only if it is a canonical prefix inside a cluster CIDR and overlaps
// neither this node's subnets nor a subnet already claimed by another peer. Without this a bogus
// lease for "0.0.0.0/0" would replace the default route (`ip route replace` matches by prefix,
// not by protocol). Problems become UnreachablePeer entries, never exceptions.
import { bitsOf, formatIP, formatPrefix, isNetwork, networkOf, tryParseIP, tryParsePrefix } from '../../net/ip.ts';
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

/** One pod subnet of a lease as parsed: the parsed form, or undefined when malformed or not a network address. */
interface ParsedSubnet {
  readonly text: string;
  readonly subnet: Omit<PeerSubnet, 'node'> | undefined;
}

/**
 * The parsed pod subnets and underlay addresses of each lease, computed once per lease object: the stores hand
 * out the same object while its record is unchanged, and re-parsing 5,000 leases (bigint math) on every
 * change of one of them was most of a reconcile's time and garbage.
 */
const subnetsOfLease = new WeakMap<NodeLease, readonly ParsedSubnet[]>();
const underlayOfLease = new WeakMap<NodeLease, { readonly 4?: IP; readonly 6?: IP }>();

function parsedSubnets(peer: NodeLease): readonly ParsedSubnet[] {
  let parsed = subnetsOfLease.get(peer);
  if (!parsed) {
    parsed = peer.podCIDRs.map((text) => {
      const prefix = tryParsePrefix(text);
      if (!prefix || !isNetwork(prefix)) return { text, subnet: undefined };
      return { text, subnet: { family: prefix.ip.family, prefix, cidr: formatPrefix(prefix), network: formatIP(networkOf(prefix)) } };
    });
    subnetsOfLease.set(peer, parsed);
  }
  return parsed;
}

/** A prefix prepared for many "is this address inside?" questions: its network and mask computed once. */
export interface PreparedPrefix {
  readonly family: Family;
  readonly length: number;
  readonly network: bigint;
  readonly mask: bigint;
}

export function preparePrefix(p: Prefix): PreparedPrefix {
  const bits = BigInt(bitsOf(p.ip.family));
  const mask = ((1n << bits) - 1n) ^ ((1n << (bits - BigInt(p.length))) - 1n);
  return { family: p.ip.family, length: p.length, network: p.ip.value & mask, mask };
}

export function within(p: PreparedPrefix, ip: IP): boolean {
  return ip.family === p.family && (ip.value & p.mask) === p.network;
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
  const clusters = parseCIDRs(clusterCIDRs).map(preparePrefix);
  // Indexed, not scanned: with thousands of peers a scan per subnet made every reconcile O(n^2).
  const claimed = new PrefixIndex<true>();
  for (const p of parseCIDRs(self.podCIDRs)) claimed.add(p, true);
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
    let families = 0; // families already routed for this peer: bit 1 IPv4, bit 2 IPv6
    for (const { text, subnet } of parsedSubnets(peer)) {
      if (!subnet) {
        unreachable.push({ node: peer.node, reason: `malformed pod subnet "${text}"` });
        continue;
      }
      const { family, prefix, cidr } = subnet;
      if (!clusters.some((c) => c.length <= prefix.length && within(c, prefix.ip))) {
        unreachable.push({ node: peer.node, family, reason: `pod subnet ${cidr} is outside the cluster CIDRs` });
        continue;
      }
      const bit = family === 4 ? 1 : 2;
      if ((families & bit) !== 0) {
        unreachable.push({ node: peer.node, family, reason: `more than one IPv${family} pod subnet; ${cidr} ignored` });
        continue;
      }
      if (claimed.firstOverlap(prefix) !== undefined) {
        unreachable.push({ node: peer.node, family, reason: `pod subnet ${cidr} overlaps this node's or another peer's subnet` });
        continue;
      }
      claimed.add(prefix, true);
      families |= bit;
      subnets.push({ node: peer.node, ...subnet });
    }
  }
  return { subnets, unreachable };
}

/** The peer's published underlay address of a family, parsed; undefined if it has none (or only malformed ones). */
export function underlayOf(peer: NodeLease, family: Family): IP | undefined {
  let byFamily = underlayOfLease.get(peer);
  if (!byFamily) {
    const found: { 4?: IP; 6?: IP } = {};
    for (const text of peer.underlayIPs) {
      const ip = tryParseIP(text);
      if (ip) found[ip.family] ??= ip;
    }
    byFamily = found;
    underlayOfLease.set(peer, byFamily);
  }
  return byFamily[family];
}
