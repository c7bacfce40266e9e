// Pure lease-store logic shared by every store: which subnet a node gets, what a well-formed lease
// looks like, and which of several contradicting leases wins. Nothing here touches the OS, so the
// stores differ only in how they make a choice stick (file links, etcd transactions).
//
// The reuse-grace rule: when a node dies its lease expires, but every other node still routes its
// subnet towards it until their next resync. Handing the subnet to a new node before then would
// send the new node's traffic to a dead host (or, worse, to a host that came back under another
// name). So an expired claim keeps blocking its subnet for `reuseGraceMs` after it lapsed; pick a
// grace of at least two agent resync periods.

import {
  bitsOf,
  canonicalPrefix,
  contains,
  formatIP,
  formatPrefix,
  isNetwork,
  lastOf,
  networkOf,
  overlaps,
  tryParseIP,
  tryParsePrefix,
} from '../net/ip.ts';
import type { Family, Prefix } from '../net/ip.ts';
import { PrefixIndex } from '../net/prefix-index.ts';
import { LeaseRequestError, SubnetsExhaustedError } from './types.ts';
import type { AcquireRequest, BackendType, ClusterNetwork, NodeLease } from './types.ts';

export class NetworkConfigError extends Error {
  override readonly name = 'NetworkConfigError';
}

/** Someone's hold on one or more subnets, as a store sees it (live, expired, or released). */
export interface SubnetClaim {
  readonly node: string;
  readonly podCIDRs: readonly string[];
  /** When the hold lapsed or will lapse (ms since the epoch); a released claim holds until its release time. */
  readonly heldUntil: number;
}

export interface ChooseOptions {
  readonly now: number;
  /** How long a lapsed claim keeps blocking its subnet for other nodes. */
  readonly reuseGraceMs: number;
}

/** One cluster CIDR with the node prefix length for its family, validated. */
export interface FamilyPool {
  readonly family: Family;
  readonly cluster: Prefix;
  readonly nodeLength: number;
}

/** Checks a ClusterNetwork (at most one CIDR per family, a node prefix per family) and returns its pools in order. */
export function poolsOf(network: ClusterNetwork): FamilyPool[] {
  if (network.clusterCIDRs.length === 0) throw new NetworkConfigError('cluster network has no CIDR');
  const pools: FamilyPool[] = [];
  for (const text of network.clusterCIDRs) {
    const p = tryParsePrefix(text);
    if (!p) throw new NetworkConfigError(`invalid cluster CIDR "${text}"`);
    if (!isNetwork(p)) throw new NetworkConfigError(`cluster CIDR "${text}" has host bits set`);
    const family = p.ip.family;
    if (pools.some((x) => x.family === family)) {
      throw new NetworkConfigError(`more than one IPv${family} cluster CIDR (${network.clusterCIDRs.join(', ')})`);
    }
    const nodeLength = network.nodePrefixLength[family];
    if (nodeLength === undefined) throw new NetworkConfigError(`no node prefix length for IPv${family}`);
    if (!Number.isInteger(nodeLength) || nodeLength < p.length || nodeLength > bitsOf(family)) {
      throw new NetworkConfigError(`node prefix /${nodeLength} does not fit in cluster CIDR ${text}`);
    }
    pools.push({ family, cluster: p, nodeLength });
  }
  return pools;
}

function blocks(claim: SubnetClaim, node: string, opts: ChooseOptions): boolean {
  return claim.node !== node && claim.heldUntil + opts.reuseGraceMs > opts.now;
}

/**
 * The subnets (one per cluster CIDR, in the network's order) that `node` should hold now:
 * its previous subnet of a family if it still has a claim on one that fits the network and
 * overlaps nobody else's blocking claim; otherwise the lowest subnet that overlaps no claim of
 * another node that is live or lapsed less than reuseGraceMs ago. Throws SubnetsExhaustedError.
 */
export function chooseSubnets(
  node: string,
  network: ClusterNetwork,
  claims: readonly SubnetClaim[],
  opts: ChooseOptions,
): string[] {
  const pools = poolsOf(network);
  const blocking: Prefix[] = [];
  const own: Prefix[] = [];
  for (const c of claims) {
    const isBlocking = blocks(c, node, opts);
    for (const text of c.podCIDRs) {
      const p = tryParsePrefix(text);
      if (!p) continue;
      if (c.node === node) own.push(canonicalPrefix(p));
      else if (isBlocking) blocking.push(canonicalPrefix(p));
    }
  }
  return pools.map((pool) => {
    // Only a conforming claim (the node length, inside the cluster CIDR) can take a node's own subnet from
    // it: a malformed or forged claim (a /23 over the real /24s, say) still blocks new allocations, but
    // must not evict a running node whose pods are using its subnet.
    const previous = own
      .filter((p) => fitsPool(p, pool) && !blocking.some((b) => fitsPool(b, pool) && overlaps(b, p)))
      .sort((a, b) => (a.ip.value < b.ip.value ? -1 : a.ip.value > b.ip.value ? 1 : 0))[0];
    if (previous) return formatPrefix(previous);
    const free = lowestFree(pool, blocking);
    if (!free) {
      throw new SubnetsExhaustedError(
        `no free /${pool.nodeLength} left in ${formatPrefix(pool.cluster)} for node ${node}`,
      );
    }
    return formatPrefix(free);
  });
}

function fitsPool(p: Prefix, pool: FamilyPool): boolean {
  return p.ip.family === pool.family && p.length === pool.nodeLength && contains(pool.cluster, p.ip);
}

/**
 * Walks the blocked ranges in address order, jumping the candidate past each one it overlaps:
 * O(claims log claims) whatever the size of the cluster CIDR (a /8 of /24s is 65536 candidates).
 */
function lowestFree(pool: FamilyPool, blocking: readonly Prefix[]): Prefix | undefined {
  const step = 1n << BigInt(bitsOf(pool.family) - pool.nodeLength);
  const end = lastOf(pool.cluster).value;
  const ranges = blocking
    .filter((b) => b.ip.family === pool.family)
    .map((b) => ({ start: networkOf(b).value, last: lastOf(b).value }))
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let cand = networkOf(pool.cluster).value;
  for (const r of ranges) {
    if (r.last < cand) continue;
    if (r.start > cand + step - 1n) break;
    // Overlap: the next candidate is the first aligned subnet after this range.
    cand = ((r.last + 1n + step - 1n) / step) * step;
    if (cand > end) return undefined;
  }
  if (cand + step - 1n > end) return undefined;
  return { ip: { family: pool.family, value: cand }, length: pool.nodeLength };
}

export type LeaseCheck =
  | { readonly ok: true; readonly lease: NodeLease }
  | { readonly ok: false; readonly reason: string };

// DNS-1123 subdomain, as Kubernetes requires for node names. The stores also use the name in
// file names and keys, so this is what keeps "../x" or "a/b" out of paths.
const DNS1123_LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const DNS1123 = new RegExp(`^${DNS1123_LABEL}(\\.${DNS1123_LABEL})*$`);

export function isNodeName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= 253 && DNS1123.test(name);
}

/** What every store checks before an acquire touches anything: the node's name and the network. */
export function assertAcquirable(req: AcquireRequest): void {
  if (!isNodeName(req.node)) throw new LeaseRequestError(`node name ${JSON.stringify(req.node)} is not a DNS-1123 subdomain`);
  try {
    poolsOf(req.network);
  } catch (e) {
    throw new LeaseRequestError(`cannot acquire a lease for ${req.node}`, { cause: e });
  }
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const BACKENDS: readonly BackendType[] = ['host-gw', 'vxlan'];

function bad(reason: string): LeaseCheck {
  return { ok: false, reason };
}

/**
 * Turns unknown JSON from a store into a NodeLease, or says what is wrong with it. With a network,
 * also requires every podCIDR to be a node-sized subnet inside the cluster CIDR of its family.
 * CIDRs, addresses and the MAC come back in canonical form; unknown extra fields are ignored
 * (a newer agent may add some).
 */
export function validateLease(raw: unknown, network?: ClusterNetwork): LeaseCheck {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('lease is not a JSON object');
  const r = raw as Record<string, unknown>;
  if (!isNodeName(r.node)) return bad(`node name ${JSON.stringify(r.node)} is not a DNS-1123 subdomain`);
  const node = r.node;

  if (!Array.isArray(r.podCIDRs) || r.podCIDRs.length === 0) return bad(`node ${node}: podCIDRs must be a non-empty array`);
  let pools: FamilyPool[] | undefined;
  if (network) {
    try {
      pools = poolsOf(network);
    } catch (e) {
      return bad(`cluster network: ${(e as Error).message}`);
    }
  }
  const podCIDRs: string[] = [];
  const cidrFamilies = new Set<Family>();
  for (const c of r.podCIDRs as unknown[]) {
    const p = typeof c === 'string' ? tryParsePrefix(c) : undefined;
    if (!p) return bad(`node ${node}: malformed podCIDR ${JSON.stringify(c)}`);
    if (!isNetwork(p)) return bad(`node ${node}: podCIDR ${String(c)} has host bits set`);
    if (cidrFamilies.has(p.ip.family)) return bad(`node ${node}: more than one IPv${p.ip.family} podCIDR`);
    cidrFamilies.add(p.ip.family);
    if (pools) {
      const pool = pools.find((x) => x.family === p.ip.family);
      if (!pool || !contains(pool.cluster, p.ip) || p.length < pool.cluster.length) {
        return bad(`node ${node}: podCIDR ${String(c)} is outside the cluster CIDRs (${network?.clusterCIDRs.join(', ')})`);
      }
      if (p.length !== pool.nodeLength) {
        return bad(`node ${node}: podCIDR ${String(c)} is not a /${pool.nodeLength}`);
      }
    }
    podCIDRs.push(formatPrefix(p));
  }

  if (typeof r.expiresAt !== 'number' || !Number.isFinite(r.expiresAt) || r.expiresAt < 0) {
    return bad(`node ${node}: expiresAt must be a time in milliseconds`);
  }

  if (!Array.isArray(r.underlayIPs) || r.underlayIPs.length === 0) {
    return bad(`node ${node}: underlayIPs must be a non-empty array`);
  }
  const underlayIPs: string[] = [];
  const ipFamilies = new Set<Family>();
  for (const a of r.underlayIPs as unknown[]) {
    const ip = typeof a === 'string' ? tryParseIP(a) : undefined;
    if (!ip) return bad(`node ${node}: malformed underlay IP ${JSON.stringify(a)}`);
    if (ipFamilies.has(ip.family)) return bad(`node ${node}: more than one IPv${ip.family} underlay IP`);
    ipFamilies.add(ip.family);
    underlayIPs.push(formatIP(ip));
  }

  if (typeof r.backend !== 'string' || !(BACKENDS as readonly string[]).includes(r.backend)) {
    return bad(`node ${node}: backend ${JSON.stringify(r.backend)} is not one of ${BACKENDS.join(', ')}`);
  }
  const backend = r.backend as BackendType;

  let vtepMAC: string | undefined;
  if (r.vtepMAC !== undefined) {
    const mac = typeof r.vtepMAC === 'string' ? r.vtepMAC.toLowerCase() : '';
    if (!MAC.test(mac)) return bad(`node ${node}: malformed vtepMAC ${JSON.stringify(r.vtepMAC)}`);
    // A multicast or all-zero MAC in a static FDB entry would flood or blackhole every packet.
    if ((parseInt(mac.slice(0, 2), 16) & 1) === 1 || mac === '00:00:00:00:00:00') {
      return bad(`node ${node}: vtepMAC ${mac} is not a unicast address`);
    }
    vtepMAC = mac;
  }
  if (backend === 'vxlan' && vtepMAC === undefined) return bad(`node ${node}: vxlan backend needs a vtepMAC`);

  const lease: NodeLease = {
    node,
    podCIDRs,
    expiresAt: r.expiresAt,
    underlayIPs,
    backend,
    ...(vtepMAC !== undefined ? { vtepMAC } : {}),
  };
  return { ok: true, lease };
}

export interface RejectedLease {
  readonly lease: NodeLease;
  readonly reason: string;
}

/**
 * Given leases oldest (most legitimate) first, keeps each one that does not contradict a lease
 * already kept: same node name twice, a podCIDR overlapping another node's, or an underlay IP
 * another node already published. Contradictions come from hand-edited stores or nodes
 * configured with different prefix lengths; routing both would blackhole one of them.
 */
/**
 * What the conflict checks need of a lease, parsed once per lease object: stores hand out the same object
 * while its record is unchanged, and every list() runs the checks over all leases again.
 */
const conflictFacts = new WeakMap<NodeLease, { readonly prefixes: readonly (Prefix | undefined)[]; readonly underlay: readonly string[] }>();

function factsOf(lease: NodeLease): { readonly prefixes: readonly (Prefix | undefined)[]; readonly underlay: readonly string[] } {
  let facts = conflictFacts.get(lease);
  if (!facts) {
    facts = { prefixes: lease.podCIDRs.map((t) => tryParsePrefix(t)), underlay: lease.underlayIPs.map((t) => canonicalIP(t)) };
    conflictFacts.set(lease, facts);
  }
  return facts;
}

export function rejectConflicts(leases: readonly NodeLease[]): {
  kept: NodeLease[];
  rejected: RejectedLease[];
} {
  const kept: NodeLease[] = [];
  const rejected: RejectedLease[] = [];
  const names = new Set<string>();
  const subnets = new PrefixIndex<{ node: string; text: string }>();
  const underlay = new Map<string, string>();
  for (const lease of leases) {
    const reason = conflictOf(lease, names, subnets, underlay);
    if (reason !== undefined) {
      rejected.push({ lease, reason });
      continue;
    }
    kept.push(lease);
    names.add(lease.node);
    const facts = factsOf(lease);
    for (let i = 0; i < lease.podCIDRs.length; i++) {
      const prefix = facts.prefixes[i];
      if (prefix) subnets.add(prefix, { node: lease.node, text: lease.podCIDRs[i] ?? '' });
    }
    for (const ip of facts.underlay) underlay.set(ip, lease.node);
  }
  return { kept, rejected };
}

function canonicalIP(text: string): string {
  const ip = tryParseIP(text);
  return ip ? formatIP(ip) : text;
}

function conflictOf(
  lease: NodeLease,
  names: ReadonlySet<string>,
  subnets: PrefixIndex<{ node: string; text: string }>,
  underlay: ReadonlyMap<string, string>,
): string | undefined {
  if (names.has(lease.node)) return `node ${lease.node} appears twice; kept the first`;
  const facts = factsOf(lease);
  for (let i = 0; i < lease.podCIDRs.length; i++) {
    const text = lease.podCIDRs[i];
    const p = facts.prefixes[i];
    if (!p) return `node ${lease.node}: malformed podCIDR ${text}`;
    const other = subnets.firstOverlap(p);
    if (other) return `node ${lease.node}: podCIDR ${text} overlaps ${other.text} of node ${other.node}`;
  }
  for (let i = 0; i < facts.underlay.length; i++) {
    const owner = underlay.get(facts.underlay[i] ?? '');
    if (owner !== undefined) return `node ${lease.node}: underlay IP ${lease.underlayIPs[i]} is already published by node ${owner}`;
  }
  return undefined;
}
