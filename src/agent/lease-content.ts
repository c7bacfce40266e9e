// Whether a store change can matter to this node's datapath. Every lease renewal rewrites the lease
// record (its expiry moves), and every record write is a watch event on every node: with N nodes
// renewing every TTL/3, each agent would otherwise run a full reconcile (kernel reads included) for
// every renewal in the cluster, continuously at a few thousand nodes. What a reconcile derives from
// the leases (routes, VXLAN entries, masquerade, bridge, CNI config) depends on everything in a lease but
// its expiry, so a watch-triggered reconcile with the same content as the last fully applied one has
// nothing to do. Expiry itself still matters (an expired lease leaves the list), and the periodic resync
// always does the full work, so drift in the kernel is repaired as before.
import type { NodeLease } from '../store/types.ts';

// Every field of a lease, and whether sameLeaseContent compares it. `satisfies` makes a new NodeLease field
// a compile error here until it is decided (and compared below, if a reconcile uses it).
export const COMPARED_FIELDS = {
  node: true,
  backend: true,
  vtepMAC: true,
  podCIDRs: true,
  underlayIPs: true,
  expiresAt: false,
} as const satisfies Record<keyof NodeLease, boolean>;

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Equal in everything a reconcile uses: all fields but `expiresAt`. */
export function sameLeaseContent(a: NodeLease, b: NodeLease): boolean {
  return (
    a === b ||
    (a.node === b.node &&
      a.backend === b.backend &&
      a.vtepMAC === b.vtepMAC &&
      sameStrings(a.podCIDRs, b.podCIDRs) &&
      sameStrings(a.underlayIPs, b.underlayIPs))
  );
}

/** Two listings with the same leases in the same order, expiry aside (a reordering counts as a change). */
export function sameListingContent(a: readonly NodeLease[], b: readonly NodeLease[]): boolean {
  return a === b || (a.length === b.length && a.every((l, i) => sameLeaseContent(l, b[i]!)));
}
