// The datapath's desired state and the kernel's actual state, as plain data.
//
// Backends (host-gw, vxlan) turn leases into a DesiredState; src/linux reads the kernel into an
// ActualState; reconcile.ts diffs the two. Nothing here touches the OS. Every address is stored in
// canonical text (formatIP/formatPrefix) so that equality is string equality.
import type { Family } from '../net/ip.ts';

/** Route protocol number that labels every route flatnet installs; only these are ever removed. */
export const ROUTE_PROTO = 241;
/** The VXLAN device flatnet owns (by name) in vxlan mode. */
export const VXLAN_DEVICE = 'flat.vx';
export const VXLAN_VNI = 4242;
/** Linux's historical VXLAN port, the one flannel uses too (not IANA's 4789). */
export const VXLAN_PORT = 8472;

export interface DesiredRoute {
  readonly family: Family;
  /** Canonical prefix, e.g. "10.244.2.0/24". */
  readonly dst: string;
  readonly gateway: string;
  readonly dev: string;
  readonly onlink: boolean;
  /** The node this route leads to (for logs and status). */
  readonly node: string;
}

export interface DesiredNeighbour {
  readonly family: Family;
  readonly dev: string;
  readonly ip: string;
  /** Lower-case "aa:bb:cc:dd:ee:ff". */
  readonly mac: string;
  readonly node: string;
}

export interface DesiredFdb {
  readonly dev: string;
  readonly mac: string;
  /** Underlay address of the peer's VTEP. */
  readonly dst: string;
  readonly node: string;
}

export interface UnreachablePeer {
  readonly node: string;
  /** The family that cannot be served; absent when the whole peer is skipped. */
  readonly family?: Family;
  readonly reason: string;
}

export interface DesiredState {
  readonly routes: readonly DesiredRoute[];
  readonly neighbours: readonly DesiredNeighbour[];
  readonly fdb: readonly DesiredFdb[];
  /** Peers (or families of peers) that get no datapath entries, with why. Never an exception. */
  readonly unreachable: readonly UnreachablePeer[];
}

/** A route in the main table as the kernel reports it (any protocol). */
export interface KernelRoute {
  readonly family: Family;
  readonly dst: string;
  readonly gateway?: string;
  readonly dev?: string;
  readonly onlink: boolean;
  /** Protocol as `ip` prints it: a number ("241") or a name ("kernel", "static"). */
  readonly protocol: string;
  readonly metric?: number;
}

export interface KernelNeighbour {
  readonly family: Family;
  readonly dev: string;
  readonly ip: string;
  readonly mac?: string;
  readonly permanent: boolean;
}

export interface KernelFdb {
  readonly dev: string;
  readonly mac: string;
  readonly dst?: string;
  readonly permanent: boolean;
}

export interface ActualState {
  /** Every route of the main table, both families: foreign ones are needed to detect conflicts. */
  readonly routes: readonly KernelRoute[];
  /** Neighbours and FDB entries on the VXLAN device (empty when it does not exist). */
  readonly neighbours: readonly KernelNeighbour[];
  readonly fdb: readonly KernelFdb[];
}

export function isOurRoute(r: KernelRoute): boolean {
  return r.protocol === String(ROUTE_PROTO);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-cases a MAC; undefined unless it is a well-formed unicast, non-zero address. */
export function canonicalUnicastMAC(text: string): string | undefined {
  if (typeof text !== 'string') return undefined;
  const mac = text.toLowerCase();
  if (!MAC_RE.test(mac) || mac === '00:00:00:00:00:00') return undefined;
  // The lowest bit of the first octet marks group (multicast/broadcast) addresses.
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) return undefined;
  return mac;
}
