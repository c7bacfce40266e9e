// The facade the daemon calls: one level-triggered sync of the inter-node datapath, one of the
// masquerade table, and one of the accept rules in an iptables FORWARD chain that drops by default.
// Each call lists what the kernel has under flatnet's labels, computes the
// difference from the leases and fixes only that. In steady state a sync spawns only readers and
// writes nothing: 2 `ip route` (one per family), plus for vxlan a device read, an ethtool read,
// `ip neigh` and `bridge fdb` (host-gw instead tries one `ip link del flat.vx`, alongside the route
// reads). Sysctls are read from /proc/sys unless a netns is given. The forward-accept sync spawns one
// `nft -j list tables` on a host without iptables filter tables, plus one `iptables -S FORWARD` per
// filter table that exists.
import { performance } from 'node:perf_hooks';
import { tryParseIP } from '../net/ip.ts';
import type { Family } from '../net/ip.ts';
import type { BackendType, NodeLease } from '../store/types.ts';
import { applyBatches, readActualState } from '../linux/datapath-state.ts';
import { appendRule, deleteRule, legacyTableNames, listChain, ruleExists, xtablesBinary, xtablesName, xtablesTool } from '../linux/iptables.ts';
import { applyNftScript, listNftTables, readNftChain, readNftTable } from '../linux/nft.ts';
import { ensureSysctl } from '../linux/sysctl.ts';
import type { Uplink } from '../linux/uplink.ts';
import { deleteVxlanDevice, ensureVxlanDevice } from '../linux/vxlan.ts';
import type { EnsureVxlanResult } from '../linux/vxlan.ts';
import { desiredHostGw } from './backends/hostgw.ts';
import { desiredVxlan, vtepLocalAddress, vtepMACFor, vxlanDeviceAddresses } from './backends/vxlan.ts';
import { VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI, canonicalUnicastMAC } from './desired.ts';
import type { DesiredState, UnreachablePeer } from './desired.ts';
import {
  FORWARD_CHAIN,
  formatRule,
  nftFilterFamilies,
  nftForwardPolicy,
  parseChainListing,
  planForwardAccept,
  wantedForwardRules,
} from './forward-accept.ts';
import type { ChainListing, XtBackend } from './forward-accept.ts';
import { NFT_FAMILY, NFT_TABLE, fingerprintNftTable, renderMasquerade, scriptDigest } from './masquerade.ts';
import { podMTU } from './mtu.ts';
import { countPlan, planSync, renderBatches } from './reconcile.ts';
import type { RouteConflict } from './reconcile.ts';

export class DatapathConfigError extends Error {
  override readonly name = 'DatapathConfigError';
}

export interface SyncDatapathInput {
  readonly self: NodeLease;
  readonly peers: readonly NodeLease[];
  readonly backend: BackendType;
  readonly uplink: Uplink;
  readonly clusterCIDRs: readonly string[];
  /** Namespace to program (path or name); the agent's own when absent. */
  readonly netns?: string;
  /** tx checksum offload on the VXLAN device (default: off, the safe choice on any kernel). */
  readonly vxlanTxChecksumOffload?: boolean;
  /** Turn on ip_forward / IPv6 forwarding for the cluster's families (default true). */
  readonly ensureForwarding?: boolean;
  /** Reuses the desired state of the previous sync when its inputs are the same objects (the daemon keeps one). */
  readonly memo?: DesiredMemo;
}

/**
 * The last desired state and the inputs it was computed from, compared by identity. Between two syncs the
 * leases usually did not change (only the kernel might have), and computing the desired state from 5,000
 * leases again costs ~50 ms and a few MB of garbage. Inputs are immutable, so identity means equality.
 */
export class DesiredMemo {
  private last?: { readonly key: readonly unknown[]; readonly desired: DesiredState };

  get(key: readonly unknown[], compute: () => DesiredState): DesiredState {
    const last = this.last;
    if (last && last.key.length === key.length && last.key.every((k, i) => k === key[i])) return last.desired;
    const desired = compute();
    this.last = { key, desired };
    return desired;
  }
}

export interface SyncDatapathResult {
  readonly backend: BackendType;
  /** MTU pods should use on this node (uplink MTU minus encapsulation). */
  readonly podMTU: number;
  /** What the kernel holds for peers after the sync. */
  readonly programmed: { readonly routes: number; readonly neighbours: number; readonly fdb: number };
  readonly changed: { readonly replaced: number; readonly deleted: number };
  readonly unreachable: readonly UnreachablePeer[];
  /** Desired routes not installed because a route of another protocol holds the prefix. */
  readonly conflicts: readonly RouteConflict[];
  readonly vxlanDevice?: EnsureVxlanResult;
  readonly durationsMs: { readonly device: number; readonly read: number; readonly apply: number; readonly total: number };
}

function familiesOf(cidrs: readonly string[]): Family[] {
  const fams = new Set<Family>();
  for (const c of cidrs) fams.add(c.includes(':') ? 6 : 4);
  return [...fams].sort();
}

/** The VTEP MAC this node uses: the one in its lease if valid, else derived from its name. */
export function vtepMACOf(self: NodeLease): string {
  return (self.vtepMAC !== undefined ? canonicalUnicastMAC(self.vtepMAC) : undefined) ?? vtepMACFor(self.node);
}

export async function syncDatapath(input: SyncDatapathInput): Promise<SyncDatapathResult> {
  const t0 = performance.now();
  const opts = input.netns !== undefined ? { netns: input.netns } : {};
  const podFamilies = familiesOf(input.self.podCIDRs);
  const memo = input.memo ?? new DesiredMemo();

  if (input.ensureForwarding ?? true) {
    const fams = familiesOf(input.clusterCIDRs);
    if (fams.includes(4)) await ensureSysctl('net.ipv4.ip_forward', '1', opts);
    if (fams.includes(6)) await ensureSysctl('net.ipv6.conf.all.forwarding', '1', opts);
  }

  let desired: DesiredState;
  let mtu: number;
  let vxlanDevice: EnsureVxlanResult | undefined;
  const tDevice = performance.now();
  if (input.backend === 'vxlan') {
    const local = vtepLocalAddress(input.self);
    const localIP = local === undefined ? undefined : tryParseIP(local);
    if (local === undefined || !localIP) throw new DatapathConfigError(`node ${input.self.node} publishes no underlay address`);
    if (!input.uplink.addresses.some((a) => a.ip === local)) {
      throw new DatapathConfigError(`underlay address ${local} is not on uplink ${input.uplink.name}`);
    }
    mtu = podMTU('vxlan', input.uplink.mtu, localIP.family, podFamilies);
    vxlanDevice = await ensureVxlanDevice(
      {
        name: VXLAN_DEVICE,
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        uplink: input.uplink.name,
        local,
        mac: vtepMACOf(input.self),
        mtu,
        addresses: vxlanDeviceAddresses(input.self.podCIDRs),
        txChecksumOffload: input.vxlanTxChecksumOffload ?? false,
      },
      opts,
    );
    const family = localIP.family;
    desired = memo.get(['vxlan', input.self, input.peers, input.clusterCIDRs, family], () =>
      desiredVxlan(input.self, input.peers, { clusterCIDRs: input.clusterCIDRs, underlayFamily: family }),
    );
  } else {
    mtu = podMTU('host-gw', input.uplink.mtu, 4, podFamilies);
    desired = memo.get(['host-gw', input.self, input.peers, input.clusterCIDRs, input.uplink], () =>
      desiredHostGw(input.self, input.peers, {
        clusterCIDRs: input.clusterCIDRs,
        uplink: input.uplink.name,
        uplinkPrefixes: input.uplink.addresses.map((a) => a.cidr),
      }),
    );
  }
  const tRead = performance.now();
  // host-gw: a device left over from vxlan mode is deleted (with its neighbours, FDB and routes) while the
  // routes are read, one process less to wait for on every reconcile. A read that still lists its routes
  // plans only what is right anyway: none of them is a host-gw route (those use the uplink), so each is
  // replaced, or deleted where deleting finds it gone already (ignored, see applyBatches).
  const [actual] = await Promise.all([
    readActualState(input.backend === 'vxlan' ? VXLAN_DEVICE : undefined, opts),
    input.backend === 'vxlan' ? undefined : deleteVxlanDevice(VXLAN_DEVICE, opts),
  ]);
  const plan = planSync(desired, actual);
  const tApply = performance.now();
  await applyBatches(renderBatches(plan), opts);
  const tEnd = performance.now();
  const installedRoutes = desired.routes.length - plan.conflicts.length;
  return {
    backend: input.backend,
    podMTU: mtu,
    programmed: { routes: installedRoutes, neighbours: desired.neighbours.length, fdb: desired.fdb.length },
    changed: countPlan(plan),
    unreachable: desired.unreachable,
    conflicts: plan.conflicts,
    ...(vxlanDevice ? { vxlanDevice } : {}),
    durationsMs: { device: tRead - tDevice, read: tApply - tRead, apply: tEnd - tApply, total: tEnd - t0 },
  };
}

export interface SyncMasqueradeInput {
  readonly clusterCIDRs: readonly string[];
  readonly podCIDRs: readonly string[];
  readonly netns?: string;
}

/** What the last successful apply left behind; pass it back in to skip unchanged re-applies. */
export interface MasqueradeState {
  readonly scriptDigest: string;
  readonly fingerprint: string;
}

export interface SyncMasqueradeResult {
  readonly changed: boolean;
  readonly state: MasqueradeState;
  readonly durationMs: number;
}

/**
 * Replaces table inet flatnet when the rendered script changed or the table no longer looks like
 * what we applied last (someone edited or deleted it); otherwise only reads it back.
 */
export async function syncMasquerade(input: SyncMasqueradeInput, previous?: MasqueradeState): Promise<SyncMasqueradeResult> {
  const t0 = performance.now();
  const opts = input.netns !== undefined ? { netns: input.netns } : {};
  const script = renderMasquerade({ clusterCIDRs: input.clusterCIDRs, podCIDRs: input.podCIDRs });
  const digest = scriptDigest(script);
  if (previous?.scriptDigest === digest) {
    const now = fingerprintNftTable(await readNftTable(NFT_FAMILY, NFT_TABLE, opts));
    if (now !== undefined && now === previous.fingerprint) {
      return { changed: false, state: previous, durationMs: performance.now() - t0 };
    }
  }
  await applyNftScript(script, opts);
  const fingerprint = fingerprintNftTable(await readNftTable(NFT_FAMILY, NFT_TABLE, opts)) ?? '';
  return { changed: true, state: { scriptDigest: digest, fingerprint }, durationMs: performance.now() - t0 };
}

export interface SyncForwardAcceptInput {
  readonly clusterCIDRs: readonly string[];
  readonly netns?: string;
}

export interface ForwardChainReport {
  readonly backend: XtBackend;
  readonly family: Family;
  /** The chain's policy as iptables prints it (`DROP`, `ACCEPT`). */
  readonly policy: string;
  /** flatnet's rules in the chain after the sync. */
  readonly rules: number;
}

export interface SyncForwardAcceptResult {
  /** The iptables FORWARD chains found: one per filter table that exists (none on a host without iptables). */
  readonly chains: readonly ForwardChainReport[];
  /** Rules appended and deleted, as readable command lines (`iptables-nft -A FORWARD -s ...`). */
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Why a chain that drops by default is not (fully) accepting cluster traffic: the node drops pod traffic. */
  readonly problems: readonly string[];
  /** Tables that exist but cannot be inspected (no binary for their backend). */
  readonly warnings: readonly string[];
  readonly durationMs: number;
}

interface FoundChain {
  readonly backend: XtBackend;
  readonly family: Family;
  /** The binary to change it with, and its listing; absent when no binary of that backend is installed. */
  readonly bin?: string;
  readonly listing?: ChainListing;
  /** The policy as nft reports it, when there is no binary to list the chain with. */
  readonly nftPolicy?: string;
}

/**
 * Puts flatnet's accept rules for the cluster CIDRs into every iptables FORWARD chain whose policy is DROP
 * (both backends, both families), and removes flatnet's rules (found by their comment) wherever they are not
 * wanted. See src/agent/forward-accept.ts for what and why. Level-triggered and idempotent: each call lists
 * the chains again; a rule is appended only when `-C` does not find it.
 */
export async function syncForwardAccept(input: SyncForwardAcceptInput): Promise<SyncForwardAcceptResult> {
  const t0 = performance.now();
  const opts = input.netns !== undefined ? { netns: input.netns } : {};
  // Malformed CIDRs throw here, before any command runs.
  for (const f of [4, 6] as const) wantedForwardRules(input.clusterCIDRs, f, 'DROP');
  const warnings: string[] = [];
  const found: FoundChain[] = [];
  const nftTables = await listNftTables(opts);
  for (const family of [4, 6] as const) {
    // nft backend: only where nft shows iptables-nft's filter table (or, without nft, iptables-nft's own -S,
    // which creates nothing).
    if (nftTables === undefined || nftFilterFamilies(nftTables).includes(family)) {
      const bin = await xtablesBinary('nft', family);
      if (bin !== undefined) {
        found.push({ backend: 'nft', family, bin, listing: parseChainListing(await listChain(bin, FORWARD_CHAIN, opts)) });
      } else if (nftTables !== undefined) {
        const nftPolicy = nftForwardPolicy(await readNftChain(family === 4 ? 'ip' : 'ip6', 'filter', FORWARD_CHAIN, opts), family);
        if (nftPolicy !== undefined) found.push({ backend: 'nft', family, nftPolicy });
      }
    }
    // legacy backend: only where the namespace has a legacy filter table (listing it otherwise would create it).
    if ((await legacyTableNames(family, opts)).includes('filter')) {
      const bin = await xtablesBinary('legacy', family);
      if (bin !== undefined) found.push({ backend: 'legacy', family, bin, listing: parseChainListing(await listChain(bin, FORWARD_CHAIN, opts)) });
      else warnings.push(`a legacy ${xtablesTool(family)} filter table exists, but no ${xtablesName('legacy', family)} binary to inspect its FORWARD chain`);
    }
  }

  const chains: ForwardChainReport[] = [];
  const added: string[] = [];
  const removed: string[] = [];
  const problems: string[] = [];
  for (const c of found) {
    const name = xtablesName(c.backend, c.family);
    const policy = c.listing?.policy ?? c.nftPolicy ?? 'ACCEPT';
    if (c.bin === undefined || c.listing === undefined) {
      if (policy === 'DROP') problems.push(`the ${name} FORWARD chain drops by default, but there is no ${name} binary to add accept rules with`);
      chains.push({ backend: c.backend, family: c.family, policy, rules: 0 });
      continue;
    }
    const plan = planForwardAccept(c.listing, wantedForwardRules(input.clusterCIDRs, c.family, policy));
    let rules = plan.kept;
    try {
      // New accepts first, then the old ones go: a change of cluster CIDRs never leaves a gap.
      for (const spec of plan.add) {
        if (!(await ruleExists(c.bin, FORWARD_CHAIN, spec, opts))) {
          await appendRule(c.bin, FORWARD_CHAIN, spec, opts);
          added.push(`${name} ${formatRule('-A', spec)}`);
        }
        rules++;
      }
      for (const spec of plan.remove) {
        await deleteRule(c.bin, FORWARD_CHAIN, spec, opts);
        removed.push(`${name} ${formatRule('-D', spec)}`);
      }
    } catch (e) {
      problems.push(`${name} FORWARD: ${e instanceof Error ? e.message : String(e)}`);
    }
    chains.push({ backend: c.backend, family: c.family, policy, rules });
  }
  return { chains, added, removed, problems, warnings, durationMs: performance.now() - t0 };
}
