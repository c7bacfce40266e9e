// The nftables table `inet flatnet`, rendered whole and applied atomically.
//
// How it works: two interval sets hold the cluster CIDRs (one per family). The postrouting nat
// chain has one rule per family: packets whose source is THIS node's pod subnet and whose
// destination is not in the cluster set are masqueraded with fully random ports (conntrack SNAT
// race: flannel PR #1001, kubernetes#56903). Pod-to-pod (any node) and node-to-pod traffic keep
// their addresses. The (unhooked) forward chain states that traffic from/to the cluster CIDRs is accepted.
// Cost per peer: nothing. The rule count is fixed (≤ 2 nat + 4 forward rules); the whole cluster
// is one set element per family, however many nodes there are.
//
// Why the node's own pod subnet rather than the cluster CIDR as the source match: with host-gw and
// vxlan a pod's traffic leaves the cluster at its own node, so this node should never translate
// another node's pod traffic; if such a packet shows up here (a misrouted or spoofed one) it is
// forwarded untranslated rather than hidden behind this node's address.
//
// Why the forward chain is not hooked: in nftables an accept ends evaluation only in its own base
// chain, so a policy-accept chain of accepts decides nothing: it cannot override a drop in another
// table or base chain, and lets through what would pass anyway. Hooked, it still cost every forwarded
// packet a hook traversal and a rule: within the noise with TSO, 2–8% of pod-to-pod throughput when
// each 1500-byte frame is a packet (docs/benchmarks.md, filtering cost). So it is a regular chain that
// only documents intent. The case where forwarding of cluster traffic really has to be accepted, an
// iptables FORWARD chain with policy DROP (Docker; flannel#609, #799), is handled where the drop is:
// flatnetd appends accept rules for the cluster CIDRs, labelled `flatnet: cluster traffic`, to that
// chain itself, and only when such a chain exists (src/agent/forward-accept.ts, syncForwardAccept in
// datapath.ts), so a host without it pays nothing per packet. Anti-spoofing is in its own table,
// bridge flatnet.
import { createHash } from 'node:crypto';
import { formatPrefix, isNetwork, overlaps, tryParsePrefix } from '../net/ip.ts';
import type { Family, Prefix } from '../net/ip.ts';

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'flatnet';

export class MasqueradeConfigError extends Error {
  override readonly name = 'MasqueradeConfigError';
}

export interface MasqueradeInput {
  /** Cluster CIDRs, at most one per family. */
  readonly clusterCIDRs: readonly string[];
  /** This node's pod subnets. */
  readonly podCIDRs: readonly string[];
}

function parseStrict(texts: readonly string[], what: string): Prefix[] {
  return texts.map((t) => {
    const p = tryParsePrefix(t);
    // Validated here so that nft never sees a malformed address (it would try DNS on it).
    if (!p || !isNetwork(p)) throw new MasqueradeConfigError(`invalid ${what} "${t}"`);
    return p;
  });
}

/** The nft script that replaces the table in one transaction. */
export function renderMasquerade(input: MasqueradeInput): string {
  const clusters = parseStrict(input.clusterCIDRs, 'cluster CIDR');
  const pods = parseStrict(input.podCIDRs, 'pod CIDR');
  for (const p of pods) {
    if (!clusters.some((c) => overlaps(c, p) && c.length <= p.length)) {
      throw new MasqueradeConfigError(`pod CIDR ${formatPrefix(p)} is outside the cluster CIDRs`);
    }
  }
  const byFamily = (list: Prefix[], f: Family): string[] => list.filter((p) => p.ip.family === f).map(formatPrefix);
  const lines: string[] = [
    // Declaring the table first makes the delete succeed when it does not exist yet.
    `table ${NFT_FAMILY} ${NFT_TABLE}`,
    `delete table ${NFT_FAMILY} ${NFT_TABLE}`,
    `table ${NFT_FAMILY} ${NFT_TABLE} {`,
    '\tcomment "flatnet: pod masquerade and forward accept; replaced whole by flatnetd"',
  ];
  for (const f of [4, 6] as const) {
    const elems = byFamily(clusters, f);
    lines.push(
      `\tset cluster${f} {`,
      `\t\ttype ipv${f}_addr`,
      '\t\tflags interval',
      '\t\tauto-merge',
      ...(elems.length > 0 ? [`\t\telements = { ${elems.join(', ')} }`] : []),
      '\t}',
    );
  }
  const proto = (f: Family): string => (f === 4 ? 'ip' : 'ip6');
  lines.push('\tchain postrouting {', '\t\ttype nat hook postrouting priority srcnat; policy accept;');
  for (const f of [4, 6] as const) {
    for (const src of byFamily(pods, f)) {
      lines.push(`\t\t${proto(f)} saddr ${src} ${proto(f)} daddr != @cluster${f} masquerade fully-random`);
    }
  }
  // No hook (see the header): these rules cost nothing and decide nothing; where a FORWARD policy drops,
  // the accepts that decide are put into that iptables chain (forward-accept.ts).
  lines.push('\t}', '\tchain forward {');
  for (const f of [4, 6] as const) {
    for (const c of byFamily(clusters, f)) lines.push(`\t\t${proto(f)} saddr ${c} accept`, `\t\t${proto(f)} daddr ${c} accept`);
  }
  lines.push('\t}', '}', '');
  return lines.join('\n');
}

export function scriptDigest(script: string): string {
  return createHash('sha256').update(script).digest('hex');
}

/**
 * A stable fingerprint of `nft -j list table` output: sets (with elements) and rules (with
 * expressions), without handles. Compared against the fingerprint taken right after our last
 * apply, it tells whether someone changed the table behind our back.
 */
export function fingerprintNftTable(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const items = (json as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) return undefined;
  const parts: unknown[] = [];
  for (const item of items) {
    if (typeof item !== 'object' || item === null) continue;
    for (const [kind, body] of Object.entries(item as Record<string, unknown>)) {
      if (kind === 'metainfo' || typeof body !== 'object' || body === null) continue;
      const rest = Object.fromEntries(Object.entries(body as Record<string, unknown>).filter(([k]) => k !== 'handle'));
      parts.push([kind, rest]);
    }
  }
  return JSON.stringify(parts);
}
