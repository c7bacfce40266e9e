// The lease store: where nodes claim their pod subnets and publish how to reach them.
//
// Kept deliberately narrow (flannel's subnet manager grew to ten methods; this has five): a node
// acquires (or re-acquires, keeping its subnet) a lease, renews it, lists everyone's leases,
// watches for changes (a hint only: agents also resync periodically) and releases on removal.
// Implementations: embedded (files, no server), etcd (v3, leases with TTL + CAS), and the Kubernetes
// API (Node spec.podCIDRs, attributes as annotations; tested against a stand-in API server).

export type BackendType = 'host-gw' | 'vxlan';

/** What a node publishes about itself next to its subnet. */
export interface NodeAttrs {
  /** Underlay address(es) peers use to reach this node (one per family at most). */
  readonly underlayIPs: readonly string[];
  /** VXLAN tunnel endpoint MAC ("aa:bb:cc:dd:ee:ff"), when the backend is vxlan. */
  readonly vtepMAC?: string;
  readonly backend: BackendType;
}

export interface NodeLease extends NodeAttrs {
  readonly node: string;
  /** Canonical CIDRs ("10.244.1.0/24", "fd10:244:0:1::/64"), at most one per family. */
  readonly podCIDRs: readonly string[];
  /** Milliseconds since the epoch after which the lease is free for others to take. */
  readonly expiresAt: number;
}

export interface ClusterNetwork {
  /** Cluster CIDRs, at most one per family ("10.244.0.0/16", "fd10:244::/56"). */
  readonly clusterCIDRs: readonly string[];
  /** Prefix length of each node subnet, per family (e.g. {4: 24, 6: 64}). */
  readonly nodePrefixLength: { readonly 4?: number; readonly 6?: number };
}

export interface AcquireRequest extends NodeAttrs {
  readonly node: string;
  readonly network: ClusterNetwork;
  readonly ttlMs: number;
}

export interface Watch {
  close(): void;
}

export interface LeaseStore {
  /**
   * Claims a subnet per cluster CIDR family for `node`. A node that still holds a lease (even an
   * expired one nobody else took) gets the same subnets back, so its pods keep working across
   * agent restarts. Never hands out a subnet overlapping another live lease.
   */
  acquire(req: AcquireRequest): Promise<NodeLease>;
  /** Extends the lease and updates its attributes; fails with LeaseLostError if someone else holds it now. */
  renew(node: string, attrs: NodeAttrs, ttlMs: number): Promise<NodeLease>;
  /** Every lease that has not expired, validated: malformed or conflicting entries are skipped and reported. */
  list(): Promise<readonly NodeLease[]>;
  /** Calls onChange (debounced by the caller) whenever any lease may have changed. */
  watch(onChange: () => void): Watch;
  /** Removes the node's lease (node removal). */
  release(node: string): Promise<void>;
  close(): Promise<void>;
}

export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
}

export class SubnetsExhaustedError extends Error {
  override readonly name = 'SubnetsExhaustedError';
}

/** Marks an error as transient (store unreachable); callers retry with backoff instead of failing. */
export const retryable: unique symbol = Symbol('flatnet.retryable');
export function isRetryable(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[retryable] === true;
}

/** Options every store takes besides where it keeps its data. */
export interface StoreOptions {
  /**
   * How long a lapsed or released claim keeps blocking its subnet for other nodes: at least two
   * agent resync periods, so every peer has withdrawn its routes to the old owner first.
   */
  readonly reuseGraceMs?: number;
  /** Validate leases in list() against this network (else the network of this store's last acquire). */
  readonly network?: ClusterNetwork;
  /** Told about every malformed or conflicting record list() skipped. */
  readonly onInvalid?: (key: string, reason: string) => void;
  /** Clock (ms since the epoch); tests move it. */
  readonly now?: () => number;
}

export const DEFAULT_REUSE_GRACE_MS = 120_000;

/** The request itself is unusable (bad node name, bad attributes); retrying will not help. */
export class LeaseRequestError extends Error {
  override readonly name = 'LeaseRequestError';
}

/** The store could not be reached or did not answer in time; marked retryable. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  readonly [retryable] = true;
}
