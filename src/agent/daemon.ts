// flatnetd's main loop.
//
// How it works: the agent holds a lease on its node's pod subnet(s) in the store and renews it every third
// of its TTL. Everything else is level-triggered: a reconcile lists all leases, computes the datapath this
// node should have (routes, or VXLAN neighbour/FDB/route entries), the masquerade table and, where an
// iptables FORWARD chain drops by default (Docker), accept rules for cluster traffic in it, compares with
// what the kernel holds under flatnet's labels and fixes the difference. A reconcile runs at start, every
// --resync seconds, and soon after any store watch event (debounced), so a missed event only delays.
// The conflist for the plugin is written only once the node holds a lease, and rewritten only when it
// changes (or someone deleted it). Stopping (SIGTERM) leaves the datapath and the lease in place: existing
// pods keep working, and a restarted agent finds everything already right and changes nothing.
// A store outage keeps the last known datapath (no flush): readiness reports the outage until the store
// answers again.
import { statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { hostname, release } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import { formatIP, networkOf, addToIP, parsePrefix } from '../net/ip.ts';
import { EmbeddedStore } from '../store/embedded.ts';
import { type LeaseStore, type NodeLease, type NodeAttrs, LeaseLostError, isRetryable } from '../store/types.ts';
import { type DetectUplinkOptions, detectUplink, type Uplink } from '../linux/uplink.ts';
import { ensureBridge } from '../linux/iproute-pod.ts';
import { run, runOk } from '../linux/run.ts';
import { vtepMACFor } from './backends/vxlan.ts';
import { ensureConflistFile, renderConflist } from './cniconfig.ts';
import {
  DesiredMemo,
  type ForwardChainReport,
  type MasqueradeState,
  type SyncDatapathResult,
  syncDatapath,
  syncForwardAccept,
  syncMasquerade,
} from './datapath.ts';
import { type EtcdCredentials, loadEtcdCredentials } from './etcd-credentials.ts';
import type { EtcdCredentialSet, EtcdStore } from '../store/etcd.ts';
import { CniServer } from './cni-server.ts';
import { startHttp } from './http.ts';
import { sameLeaseContent, sameListingContent } from './lease-content.ts';
import { type Logger, createLogger } from './log.ts';
import { type Gauge, agentMetrics } from './metrics.ts';
import { podMTU, txChecksumOffloadWanted } from './mtu.ts';
import { type AgentOptions, overlapsUnderlay, parseListen } from './options.ts';

export const BRIDGE = 'flat0';
/** How soon a failed lease renewal is tried again (instead of at the next TTL/3 tick). */
const RENEW_RETRY_MS = 1_000;

export interface PeerStatus {
  readonly node: string;
  readonly podCIDRs: readonly string[];
  readonly underlayIPs: readonly string[];
  readonly reachable: boolean;
  readonly reason?: string;
}

export class Agent {
  readonly metrics = agentMetrics();
  readonly log: Logger;
  private store!: LeaseStore;
  /**
   * With an etcd store that reads credential files: the flags naming them, the files, what they held when
   * last looked at, and the store to give new ones to.
   */
  private etcdCredentials?: {
    readonly flags: Pick<EtcdAgentStore, 'tls' | 'auth'>;
    readonly paths: readonly string[];
    seen: string;
    readonly store: EtcdStore;
    readonly expiry?: Gauge;
  };
  private server?: Server;
  private cniServer?: CniServer;
  private uplink!: Uplink;
  /** How start() found the uplink; refreshUplink() asks the same way (the same device). */
  private uplinkQuery!: DetectUplinkOptions;
  private lease?: NodeLease;
  /** The last list() and the peers in it: the store returns the same array while nothing changed. */
  private listed?: { all: readonly NodeLease[]; peers: readonly NodeLease[] };
  /** Peers of the last datapath sync and the ones it could not reach (status is built from them when asked). */
  private peers: readonly NodeLease[] = [];
  private unreachable: ReadonlyMap<string, string> = new Map();
  private masq?: MasqueradeState;
  /** iptables FORWARD chains found by the last forward-accept sync, and its warnings (logged when they start). */
  private forwardChains: readonly ForwardChainReport[] = [];
  private forwardWarnings: ReadonlySet<string> = new Set();
  private forwardSyncedAt = 0;
  /** A full reconcile is owed (the first one, the periodic resync, a new lease). */
  private fullPending = true;
  /** The leases (ours and the listing) of the last reconcile in which every step succeeded. */
  private applied: { readonly own: NodeLease; readonly all: readonly NodeLease[] } | undefined;
  private lastSync?: SyncDatapathResult;
  private readonly desired = new DesiredMemo();
  private readonly readiness = { lease: false, cniConfig: false, datapath: false, masquerade: false, forwardAccept: false, store: false, cniServer: false };
  private lastLoopAt = Date.now();
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private renewing = false;
  /** A renewal was asked for while one ran (which may carry attributes that are already stale): run one more. */
  private renewAgain = false;
  private renewRetry: NodeJS.Timeout | undefined;
  private debounce?: NodeJS.Timeout;
  private syncing: Promise<void> | undefined;
  private syncAgain = false;
  private lastError?: string;

  constructor(readonly opts: AgentOptions, log?: Logger) {
    this.log = log ?? createLogger(opts.logFormat, { component: 'flatnetd', node: opts.node });
  }

  async start(): Promise<void> {
    const o = this.opts;
    this.log.info('starting', { options: { ...o } });
    this.server = await startHttp(parseListen(o.listen), {
      healthy: () => Date.now() - this.lastLoopAt < Math.max(3 * o.resyncMs, 30_000),
      ready: () => this.ready(),
      metrics: () => this.metrics.registry.render(),
      status: () => this.status(),
    });
    this.uplink = await detectUplink(
      o.uplink !== undefined ? { name: o.uplink } : o.underlayIP !== undefined ? { towards: o.underlayIP } : { name: await defaultRouteDevice() },
    );
    this.uplinkQuery = o.underlayIP !== undefined && o.uplink === undefined ? { towards: o.underlayIP } : { name: this.uplink.name };
    const clash = overlapsUnderlay(o.clusterCIDRs, this.uplink.addresses.map((a) => a.network));
    if (clash) throw new Error(clash);
    this.store = await this.openStore();
    await this.acquire();
    // Watch first, then reconcile: a peer that appears during the first reconcile is not missed until
    // the next resync.
    this.store.watch(() => this.soon());
    await this.reconcile();
    // Serving plugin calls is an optimisation: without it every call starts Node, as on a node without
    // an agent, so a failure here is a warning, not a reason to stop.
    if (o.serveCni !== false) {
      const cni = new CniServer({ log: this.log, metrics: this.metrics });
      try {
        if (await cni.start()) this.cniServer = cni;
      } catch (e) {
        this.log.warn('not serving plugin calls', { error: e });
      }
    }
    // Ready means every part of the start-up has had its turn: a runtime that waits for /readyz before its
    // first pod gets that pod's ADD served, not started as its own Node because the socket came a moment later.
    this.readiness.cniServer = true;
    this.metrics.ready.set(this.ready().ready ? 1 : 0);
    this.timers.push(setInterval(() => this.soon(0, 'full'), o.resyncMs));
    this.timers.push(setInterval(() => void this.renew(), Math.max(1000, Math.floor(o.leaseTtlMs / 3))));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.cniServer?.stop();
    for (const t of this.timers) clearInterval(t);
    if (this.debounce) clearTimeout(this.debounce);
    if (this.renewRetry) clearTimeout(this.renewRetry);
    await this.syncing;
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    await this.store?.close().catch(() => undefined);
    this.log.info('stopped; datapath and lease left in place');
  }

  private async openStore(): Promise<LeaseStore> {
    const o = this.opts;
    const network = { clusterCIDRs: o.clusterCIDRs, nodePrefixLength: o.nodePrefix };
    const common = {
      reuseGraceMs: o.reuseGraceMs,
      network,
      onInvalid: (key: string, reason: string) => {
        this.metrics.invalidLeases.inc();
        this.log.warn('ignoring invalid lease record', { key, reason });
      },
    };
    if (o.store.kind === 'embedded') return new EmbeddedStore({ ...common, dir: o.store.dir });
    if (o.store.kind === 'kubernetes') {
      const { KubeStore } = await import('../store/kubernetes.ts');
      const k = o.store;
      return new KubeStore({ ...common, server: k.server, ...(k.tokenFile ? { tokenFile: k.tokenFile } : {}), ...(k.caFile ? { caFile: k.caFile } : {}) });
    }
    // Loaded only when used: the etcd client (gRPC, protobuf) costs ~100 ms to load.
    const { EtcdStore } = await import('../store/etcd.ts');
    const paths = credentialPaths(o.store);
    const seen = fileSignature(paths);
    const creds = loadEtcdCredentials(o.store.tls, o.store.auth);
    for (const w of creds.warnings) this.log.warn(w);
    // Registered only where there is a client certificate: an expiry of 0 elsewhere would look expired.
    let expiry: Gauge | undefined;
    if (creds.clientCertNotAfter !== undefined) {
      expiry = this.metrics.registry.gauge(
        'flatnet_etcd_client_cert_expiry_timestamp_seconds',
        'when the client certificate the agent presents to etcd expires (alert well before; replace the files, the agent rereads them)',
      );
      expiry.set(Math.floor(creds.clientCertNotAfter / 1000));
    }
    const store = new EtcdStore({ ...common, endpoints: o.store.endpoints, cluster: o.store.cluster, ...credentialSet(creds) });
    if (paths.length > 0) this.etcdCredentials = { flags: o.store, paths, seen, store, ...(expiry ? { expiry } : {}) };
    return store;
  }

  /**
   * Rereads the etcd credential files when one of them changed (every full resync): a rotated client
   * certificate, CA or password takes effect without a restart (cert-manager and the like rotate them
   * every few weeks). A set that does not pass the checks made at start (say the new certificate is in
   * place but its key not yet) is refused with a log line, and the agent keeps talking with the one it
   * has; it tries again when a file changes again.
   */
  private reloadEtcdCredentials(): void {
    const c = this.etcdCredentials;
    if (!c) return;
    const now = fileSignature(c.paths);
    if (now === c.seen) return;
    c.seen = now;
    let creds;
    try {
      creds = loadEtcdCredentials(c.flags.tls, c.flags.auth);
    } catch (e) {
      this.metrics.etcdCredentialReloads.inc({ result: 'refused' });
      this.log.warn('the etcd credential files changed but cannot be used; keeping the credentials in use', { error: e });
      return;
    }
    c.store.replaceCredentials(credentialSet(creds));
    for (const w of creds.warnings) this.log.warn(w);
    if (creds.clientCertNotAfter !== undefined) c.expiry?.set(Math.floor(creds.clientCertNotAfter / 1000));
    this.metrics.etcdCredentialReloads.inc({ result: 'applied' });
    this.log.info('etcd credentials reloaded from their files', { files: c.paths });
  }

  /**
   * Reads the uplink again (every full resync): a node whose underlay address changed (DHCP, a VM moved, a
   * container runtime restarted: kind#2045) publishes the new one at once, and its peers re-route to it, rather
   * than pointing at an address nobody holds until the agent restarts. The device stays the one found at
   * start. A reading with no usable address, or one that overlaps the cluster CIDR, is not taken.
   */
  private async refreshUplink(): Promise<void> {
    const next = await detectUplink(this.uplinkQuery);
    const before = this.uplink;
    const same = next.mtu === before.mtu && next.addresses.map((a) => a.cidr).join() === before.addresses.map((a) => a.cidr).join();
    if (same) return;
    const clash = overlapsUnderlay(this.opts.clusterCIDRs, next.addresses.map((a) => a.network));
    if (clash) throw new Error(`uplink ${next.name} changed, not taken: ${clash}`);
    const published = this.lease?.underlayIPs.join() ?? '';
    this.uplink = next;
    let attrs: NodeAttrs;
    try {
      attrs = this.attrs();
    } catch (e) {
      this.uplink = before;
      throw new Error(`uplink ${next.name} changed, not taken: ${(e as Error).message}`);
    }
    this.log.info('uplink changed', { uplink: next.name, mtu: next.mtu, addresses: next.addresses.map((a) => a.cidr), was: { mtu: before.mtu, addresses: before.addresses.map((a) => a.cidr) } });
    if (attrs.underlayIPs.join() !== published) {
      this.log.info('publishing a new underlay address', { underlayIPs: attrs.underlayIPs, was: published });
      await this.renew();
    }
  }

  private attrs(): NodeAttrs {
    const o = this.opts;
    const globals = this.uplink.addresses;
    const v4 = o.underlayIP?.includes(':') === false ? o.underlayIP : globals.find((a) => a.family === 4)?.ip;
    const v6 = o.underlayIP?.includes(':') ? o.underlayIP : globals.find((a) => a.family === 6)?.ip;
    const underlayIPs = [v4, v6].filter((x): x is string => x !== undefined);
    if (underlayIPs.length === 0) throw new Error(`uplink ${this.uplink.name} has no global address to use as underlay`);
    return { underlayIPs, backend: o.backend, ...(o.backend === 'vxlan' ? { vtepMAC: vtepMACFor(o.node) } : {}) };
  }

  /** Acquires the lease, retrying while the store is unreachable. */
  private async acquire(): Promise<void> {
    const o = this.opts;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        this.lease = await this.store.acquire({
          node: o.node,
          network: { clusterCIDRs: o.clusterCIDRs, nodePrefixLength: o.nodePrefix },
          ttlMs: o.leaseTtlMs,
          ...this.attrs(),
        });
        this.readiness.lease = true;
        this.readiness.store = true;
        this.metrics.storeUp.set(1);
        this.log.info('holding lease', { podCIDRs: this.lease.podCIDRs, underlayIPs: this.lease.underlayIPs });
        return;
      } catch (e) {
        if (!isRetryable(e)) throw e;
        this.metrics.storeUp.set(0);
        this.readiness.store = false;
        this.noteError('store', e);
        await sleep(Math.min(5000, 200 * 2 ** Math.min(attempt, 5)));
      }
    }
  }

  private async renew(): Promise<void> {
    if (this.stopped || !this.lease) return;
    if (this.renewing) {
      this.renewAgain = true;
      return;
    }
    this.renewing = true;
    this.renewAgain = false;
    if (this.renewRetry) clearTimeout(this.renewRetry);
    this.renewRetry = undefined;
    try {
      this.lease = await this.store.renew(this.opts.node, this.attrs(), this.opts.leaseTtlMs);
      this.metrics.renewals.inc({ result: 'ok' });
      this.metrics.storeUp.set(1);
      if (!this.readiness.store) this.log.info('store reachable again');
      this.readiness.store = true;
    } catch (e) {
      this.metrics.renewals.inc({ result: 'error' });
      if (e instanceof LeaseLostError) {
        // Someone else holds our subnet now: never keep using it. Re-acquire; pods must be recreated.
        this.log.error('lease lost; re-acquiring', { error: e });
        this.readiness.lease = false;
        await this.acquire();
        this.soon(0, 'full');
        return;
      }
      this.metrics.storeUp.set(0);
      this.readiness.store = false;
      this.noteError('store', e);
      // Retry soon, not at the next tick: after two failed renewals the third tick falls on the lease's
      // expiry, so a store outage ending in the last third of the TTL would let the lease lapse (peers
      // withdraw our routes) although the store answered again well before.
      if (!this.stopped) this.renewRetry = setTimeout(() => void this.renew(), RENEW_RETRY_MS);
    } finally {
      this.renewing = false;
      if (this.renewAgain && !this.stopped) void this.renew();
    }
  }

  /**
   * Schedules a reconcile soon (debounced: a burst of events becomes one reconcile). A store watch event
   * asks for one that may stop after listing the leases when their content did not change (lease-content.ts);
   * 'full' (the periodic resync, a new lease) always reads and repairs the kernel.
   */
  private soon(delayMs = 50, kind: 'if-changed' | 'full' = 'if-changed'): void {
    if (this.stopped) return;
    if (kind === 'full') this.fullPending = true;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.reconcile(), delayMs);
  }

  /** One full reconcile; concurrent requests coalesce into one more run after the current one. */
  reconcile(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      do {
        this.syncAgain = false;
        await this.reconcileOnce();
      } while (this.syncAgain && !this.stopped);
    })().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async reconcileOnce(): Promise<void> {
    const t0 = performance.now();
    this.lastLoopAt = Date.now();
    if (!this.lease) return;
    const full = this.fullPending;
    this.fullPending = false;
    // Independent steps: one failing (say nft missing) must not keep the others (the conflist, routes)
    // from converging. Readiness tells which one is not in place.
    const failures: unknown[] = [];
    const step = async (name: string, fn: () => Promise<void>): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (e) {
        failures.push(e);
        this.noteError(name, e);
        return false;
      }
    };
    // Before the listing: a changed underlay address is published (renewed) first, so this pass already
    // programs the datapath for it.
    if (full) await step('uplink', () => this.refreshUplink());
    if (full) this.reloadEtcdCredentials();
    const lease = this.lease;
    let all: readonly NodeLease[] | undefined;
    try {
      all = await this.store.list();
      this.readiness.store = true;
      this.metrics.storeUp.set(1);
    } catch (e) {
      // Keep the datapath as it is: a store outage must not withdraw working routes.
      this.readiness.store = false;
      this.metrics.storeUp.set(0);
      this.noteError('store', e);
    }
    // A watch event that changed nothing but expiry times (lease renewals, cluster-wide) leaves nothing to do.
    if (!full && all && this.applied && sameLeaseContent(this.applied.own, lease) && sameListingContent(this.applied.all, all)) {
      this.metrics.reconcilesSkipped.inc();
      return;
    }
    // Peers' routes first: they are what every node waits for when a lease appears, and they need nothing
    // the bridge or the masquerade table provides.
    if (all) {
      if (this.listed?.all !== all) this.listed = { all, peers: all.filter((l) => l.node !== this.opts.node) };
      const peers = this.listed.peers;
      this.readiness.datapath = await step('datapath', () => this.syncPeers(lease, peers));
    }
    await step('bridge', () => this.ensureBridge(lease));
    this.readiness.masquerade = await step('masquerade', async () => {
      const masq = await syncMasquerade({ clusterCIDRs: this.opts.clusterCIDRs, podCIDRs: lease.podCIDRs }, this.masq);
      if (masq.changed) {
        this.metrics.masqueradeApplies.inc();
        this.log.info('masquerade table applied');
      }
      this.masq = masq.state;
    });
    // Its wanted state depends on no lease, only on the chains someone else manages, so a watch event is
    // no reason to look again: once per resync period (and until it succeeds) is enough, and it spares
    // busy reconciles an `nft` start (~30 ms of CPU here) each.
    if (!this.readiness.forwardAccept || Date.now() - this.forwardSyncedAt >= this.opts.resyncMs * 0.8) {
      this.forwardSyncedAt = Date.now();
      this.readiness.forwardAccept = await step('forward-accept', () => this.syncForwardAccept());
    }
    this.readiness.cniConfig = await step('cni-config', () => this.writeCniConfig(lease));
    this.applied = failures.length === 0 && all ? { own: lease, all } : undefined;
    this.metrics.reconciles.inc({ result: failures.length === 0 && all ? 'ok' : 'error' });
    this.metrics.reconcileSeconds.observe((performance.now() - t0) / 1000);
    this.metrics.ready.set(this.ready().ready ? 1 : 0);
  }

  private async syncPeers(lease: NodeLease, peers: readonly NodeLease[]): Promise<void> {
    const result = await syncDatapath({
      self: lease,
      peers,
      backend: this.opts.backend,
      uplink: this.uplink,
      clusterCIDRs: this.opts.clusterCIDRs,
      vxlanTxChecksumOffload: txChecksumOffloadWanted(this.opts.vxlanTxChecksumOffload, release()),
      memo: this.desired,
    });
    this.lastSync = result;
    const unreachable = new Map(result.unreachable.map((u) => [u.node, u.reason]));
    // Logged when it starts, not on every resync.
    for (const [node, reason] of unreachable) if (!this.unreachable.has(node)) this.log.warn('peer unreachable with this backend', { peer: node, reason });
    this.peers = peers;
    this.unreachable = unreachable;
    for (const c of result.conflicts) this.log.warn('route conflict: another protocol holds a peer subnet', { conflict: c });
    this.metrics.peers.set(peers.length);
    this.metrics.peersUnreachable.set(unreachable.size);
    this.metrics.routes.set(result.programmed.routes);
    this.metrics.neighbours.set(result.programmed.neighbours);
    this.metrics.fdb.set(result.programmed.fdb);
    this.metrics.podMTU.set(result.podMTU);
    this.metrics.changes.inc({ op: 'replaced' }, result.changed.replaced);
    this.metrics.changes.inc({ op: 'deleted' }, result.changed.deleted);
    if (result.changed.replaced + result.changed.deleted > 0) this.log.info('datapath updated', { ...result.changed, routes: result.programmed.routes });
  }

  /** Accept rules for cluster traffic in iptables FORWARD chains that drop by default (Docker); see forward-accept.ts. */
  private async syncForwardAccept(): Promise<void> {
    const r = await syncForwardAccept({ clusterCIDRs: this.opts.clusterCIDRs });
    this.forwardChains = r.chains;
    this.metrics.forwardAcceptRules.set(r.chains.reduce((n, c) => n + c.rules, 0));
    this.metrics.forwardAcceptChanges.inc({ op: 'added' }, r.added.length);
    this.metrics.forwardAcceptChanges.inc({ op: 'removed' }, r.removed.length);
    if (r.added.length > 0) this.log.info('iptables FORWARD accept rules added', { rules: r.added });
    if (r.removed.length > 0) this.log.info('iptables FORWARD accept rules removed', { rules: r.removed });
    const warnings = new Set(r.warnings);
    for (const w of warnings) if (!this.forwardWarnings.has(w)) this.log.warn('iptables FORWARD chain not inspected', { reason: w });
    this.forwardWarnings = warnings;
    if (r.problems.length > 0) throw new Error(r.problems.join('; '));
  }

  /** The pod bridge with the gateway address of each pod subnet: node-to-pod traffic needs it before any pod exists. */
  private async ensureBridge(lease: NodeLease): Promise<void> {
    await ensureBridge(BRIDGE, this.podMTU(), vtepMACFor(`${this.opts.node}-bridge`));
    const lines = lease.podCIDRs.map((c) => {
      const p = parsePrefix(c);
      const gw = formatIP(addToIP(networkOf(p), 1n));
      return `addr replace ${gw}/${p.length} dev ${BRIDGE}${p.ip.family === 6 ? ' nodad' : ''}`;
    });
    await runOk(['ip', '-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  private podMTU(): number {
    if (this.lastSync) return this.lastSync.podMTU;
    const fam = this.uplink.addresses.some((a) => a.family === 4) ? 4 : 6;
    return podMTU(this.opts.backend, this.uplink.mtu, fam);
  }

  private async writeCniConfig(lease: NodeLease): Promise<void> {
    const o = this.opts;
    const content = renderConflist({
      name: o.networkName,
      mtu: this.podMTU(),
      podCIDRs: lease.podCIDRs,
      clusterCIDRs: o.clusterCIDRs,
      portmap: o.portmap,
      bridge: BRIDGE,
      ipamDataDir: o.ipamDataDir,
    });
    await mkdir(o.cniConfDir, { recursive: true, mode: 0o755 });
    if (await ensureConflistFile(join(o.cniConfDir, o.cniConfName), content)) {
      this.metrics.cniConfigWrites.inc();
      this.log.info('CNI config written', { path: join(o.cniConfDir, o.cniConfName) });
    }
    this.readiness.cniConfig = true;
  }

  ready(): { ready: boolean; reasons: string[] } {
    const r = this.readiness;
    const reasons = [
      ...(r.lease ? [] : ['no subnet lease yet']),
      ...(r.store ? [] : ['store unreachable']),
      ...(r.cniConfig ? [] : ['CNI config not written']),
      ...(r.datapath ? [] : ['routes not programmed']),
      ...(r.masquerade ? [] : ['masquerade rules not applied']),
      ...(r.forwardAccept ? [] : ['iptables FORWARD accept rules not in place']),
      ...(r.cniServer ? [] : ['plugin-call socket not set up yet']),
    ];
    return { ready: reasons.length === 0, reasons };
  }

  status(): unknown {
    return {
      node: this.opts.node,
      backend: this.opts.backend,
      podCIDRs: this.lease?.podCIDRs ?? [],
      underlayIPs: this.lease?.underlayIPs ?? [],
      uplink: this.uplink ? { name: this.uplink.name, mtu: this.uplink.mtu } : undefined,
      podMTU: this.lastSync?.podMTU,
      cniSocket: this.cniServer?.socketPath ?? null,
      cniCalls: this.cniServer?.calls() ?? null,
      forwardChains: this.forwardChains,
      ready: this.ready().ready,
      notReadyReasons: this.ready().reasons,
      peers: this.peers.map((p): PeerStatus => {
        const reason = this.unreachable.get(p.node);
        return { node: p.node, podCIDRs: p.podCIDRs, underlayIPs: p.underlayIPs, reachable: reason === undefined, ...(reason !== undefined ? { reason } : {}) };
      }),
      lastError: this.lastError,
    };
  }

  private noteError(kind: string, e: unknown): void {
    this.metrics.errors.inc({ kind });
    this.lastError = `${kind}: ${e instanceof Error ? e.message : String(e)}`;
    this.log.error(`${kind} error`, { error: e instanceof Error ? e.message : String(e) });
  }
}

/**
 * The device holding the default route (IPv4 first, then IPv6): the documented default of --uplink when
 * neither --uplink nor --underlay-ip is given. (detectUplink itself needs a name or an address.)
 */
export async function defaultRouteDevice(): Promise<string> {
  for (const family of ['-4', '-6']) {
    const r = await run(['ip', '-j', family, 'route', 'show', 'default']);
    if (r.code !== 0) continue;
    try {
      const routes: unknown = JSON.parse(r.stdout.trim() || '[]');
      const dev = Array.isArray(routes) ? (routes as { dev?: unknown }[]).map((x) => x.dev).find((d) => typeof d === 'string') : undefined;
      if (typeof dev === 'string') return dev;
    } catch {
      /* unreadable: try the other family, then fail below */
    }
  }
  throw new Error('no --uplink or --underlay-ip given, and no default route to find the uplink by');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function defaultNodeName(): string {
  return hostname();
}

type EtcdAgentStore = Extract<AgentOptions['store'], { kind: 'etcd' }>;

/** The files flatnetd reads etcd credentials from (--etcd-cafile, -certfile, -keyfile, -password-file). */
function credentialPaths(store: EtcdAgentStore): string[] {
  const t = store.tls;
  return [t?.caFile, t?.certFile, t?.keyFile, store.auth?.passwordFile].filter((p): p is string => p !== undefined);
}

/** What the store takes from what the files held. */
function credentialSet(creds: EtcdCredentials): EtcdCredentialSet {
  return { ...(creds.tls ? { tls: creds.tls } : {}), ...(creds.auth ? { auth: creds.auth } : {}) };
}

/** What identifies the files' current contents without reading them: replaced (inode) or rewritten (size, times). */
function fileSignature(paths: readonly string[]): string {
  return paths
    .map((p) => {
      try {
        const st = statSync(p);
        return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      } catch (e) {
        return `unreadable:${(e as NodeJS.ErrnoException).code ?? ''}`;
      }
    })
    .join('|');
}
