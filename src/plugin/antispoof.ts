// Anti-spoofing, on by default: a pod may send only with its own MAC and its own addresses.
//
// How it works: one nftables table `bridge flatnet`, hooked at bridge prerouting (before forwarding and
// before local delivery), with three sets keyed by the host veth (the bridge port the frame came in on):
// (port . MAC), (port . IPv4 . MAC) and (port . IPv6 . MAC). A frame from a flatnet port whose tuple is not
// in the sets is dropped; ARP is checked by its sender address, IPv6 link-local and unspecified sources
// (neighbour discovery, DAD) pass the address check but not the MAC check. Unknown ports are therefore
// closed by default: a pod whose entries are not (yet) programmed cannot send at all, never spoof.
//
// Rule layout, for the cost per frame (docs/benchmarks.md, filtering cost): one chain, in which a pod's
// own frame is accepted by ONE set lookup, and IPv4 (nearly all pod traffic) is tested first. A
// (port . address . MAC) element exists only next to its (port . MAC) element (they go in and out
// together), so the address lookup is also the MAC check; the MAC-only set is consulted just for IPv6
// link-local/unspecified sources and for other ethertypes. Each ethertype's accept is followed by its own
// counted drop, so nothing falls through to a looser rule and the counters count spoofed frames only,
// never the pod's own traffic. (A first version dispatched through a verdict map to a chain per ethertype;
// it measured no faster than the old layout: for IPv4 a map lookup and a jump cost more than a compare.)
//
// Cost of programming: see antispoof-apply.ts (entries over netlink; `nft` renders the table below only
// when it is missing). The rule count is constant: one element per pod address, no rule per pod.
export const AS_TABLE = 'flatnet';
export const AS_FAMILY = 'bridge';

export interface PortEntries {
  readonly port: string;
  readonly mac: string;
  readonly ips: readonly string[];
}

function elements(e: PortEntries): string[] {
  const lines = [`element bridge ${AS_TABLE} pod_macs { "${e.port}" . ${e.mac} }`];
  for (const ip of e.ips) {
    const set = ip.includes(':') ? 'pods_v6' : 'pods_v4';
    lines.push(`element bridge ${AS_TABLE} ${set} { "${e.port}" . ${ip} . ${e.mac} }`);
  }
  return lines;
}

/** The table (created if absent, its rules re-rendered) plus this port's entries, as one nft transaction. */
export function renderAntiSpoofAdd(e: PortEntries): string {
  const t = `bridge ${AS_TABLE}`;
  return [
    `add table ${t}`,
    `add set ${t} pod_macs { type ifname . ether_addr ; }`,
    `add set ${t} pods_v4 { type ifname . ipv4_addr . ether_addr ; }`,
    `add set ${t} pods_v6 { type ifname . ipv6_addr . ether_addr ; }`,
    `add chain ${t} prerouting { type filter hook prerouting priority -300 ; policy accept ; }`,
    // Re-rendering the rules in the same transaction keeps them exactly these, however often this runs.
    `flush chain ${t} prerouting`,
    // Frames not from a pod port (another bridge in this namespace) leave at the first rule.
    `add rule ${t} prerouting iifname != "flv*" accept`,
    `add rule ${t} prerouting ether type ip iifname . ip saddr . ether saddr @pods_v4 accept`,
    `add rule ${t} prerouting ether type ip counter drop`,
    `add rule ${t} prerouting ether type ip6 iifname . ip6 saddr . ether saddr @pods_v6 accept`,
    `add rule ${t} prerouting ether type ip6 ip6 saddr { ::, fe80::/10 } iifname . ether saddr @pod_macs accept`,
    `add rule ${t} prerouting ether type ip6 counter drop`,
    `add rule ${t} prerouting ether type arp iifname . arp saddr ip . ether saddr @pods_v4 accept`,
    `add rule ${t} prerouting ether type arp counter drop`,
    `add rule ${t} prerouting iifname . ether saddr @pod_macs accept`,
    `add rule ${t} prerouting counter drop`,
    ...elements(e).map((l) => `add ${l}`),
  ].join('\n');
}

/**
 * Removes a port's entries. Each is added first: `add` of an existing element is a no-op and `delete` of a
 * missing one would fail the whole transaction, so add-then-delete removes it whether or not it was there.
 */
export function renderAntiSpoofDelete(entries: readonly PortEntries[]): string {
  const lines = entries.flatMap(elements);
  return [`add table bridge ${AS_TABLE}`, `add set bridge ${AS_TABLE} pod_macs { type ifname . ether_addr ; }`, `add set bridge ${AS_TABLE} pods_v4 { type ifname . ipv4_addr . ether_addr ; }`, `add set bridge ${AS_TABLE} pods_v6 { type ifname . ipv6_addr . ether_addr ; }`, ...lines.map((l) => `add ${l}`), ...lines.map((l) => `delete ${l}`)].join('\n');
}

/** Reads `nft -j list table bridge flatnet` into entries per port (for CHECK and GC). */
export function parseAntiSpoofTable(json: unknown): Map<string, { macs: Set<string>; ips: Map<string, string> }> {
  const ports = new Map<string, { macs: Set<string>; ips: Map<string, string> }>();
  const entryOf = (port: string) => {
    let e = ports.get(port);
    if (!e) ports.set(port, (e = { macs: new Set(), ips: new Map() }));
    return e;
  };
  const items = (json as { nftables?: unknown[] } | undefined)?.nftables ?? [];
  for (const item of items) {
    const set = (item as { set?: { name?: string; elem?: unknown[] } }).set;
    if (!set?.elem) continue;
    for (const el of set.elem) {
      const concat = ((el as { concat?: unknown[] }).concat ?? (el as { elem?: { val?: { concat?: unknown[] } } }).elem?.val?.concat) as string[] | undefined;
      if (!Array.isArray(concat)) continue;
      const [port, a, b] = concat.map(String);
      if (port === undefined || a === undefined) continue;
      if (set.name === 'pod_macs') entryOf(port).macs.add(a.toLowerCase());
      else if (b !== undefined) entryOf(port).ips.set(a, b.toLowerCase());
    }
  }
  return ports;
}
