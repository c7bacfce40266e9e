// EtcdStore: the lease store in etcd v3, for clusters whose nodes do not share a disk.
//
// How it works. Under `/flatnet/<cluster>/` there are two kinds of keys:
//   leases/<node>            the node's NodeLease (JSON), bound to an etcd lease with the node's TTL,
//                            so etcd deletes it when the node stops renewing;
//   subnets/<ip>_<len>       the claim on one subnet: {node, heldUntil, since}, NOT bound to a lease,
//                            so it outlives its holder as the record of when the subnet was last held.
// A subnet is blocked for other nodes while its holder's lease key lists it, and for reuseGraceMs
// after `heldUntil` (the holder's last expiry, or its release time) -- the grace during which
// peers may still route the subnet to the old holder. Every change (acquire, renew, release) is
// one transaction that compares the mod revision of every claim it read (or that it is absent)
// and then writes the claims and the lease key together, so two nodes racing for one subnet
// cannot both win, and a lease key never names a subnet its node does not hold.
//
// Costs: acquire and renew are one range read of the prefix, one lease grant, one transaction and
// one lease revoke (~1 ms each on a local etcd); a lost race costs another read and transaction.
// Renewal grants a fresh etcd lease instead of streaming keepalives, so any store instance can
// renew any node and a restarted agent needs no local state. heldUntil uses the writer's clock:
// keep the grace well above the clock skew between nodes.

import { Etcd3, isRecoverableError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import type { IKeyValue, Watcher } from 'etcd3';
// etcd3's default per-host circuit breaker fails every call for 5 s after three failures, with an
// error that is not marked recoverable; callers here already retry with backoff, so calls go
// straight through and an outage ends as soon as etcd answers again.
import { noop } from 'cockatiel';
import { chooseSubnets, isNodeName, poolsOf, rejectConflicts, validateLease } from './subnets.ts';
import type { SubnetClaim } from './subnets.ts';
import {
  DEFAULT_REUSE_GRACE_MS,
  LeaseLostError,
  LeaseRequestError,
  StoreUnavailableError,
} from './types.ts';
import type {
  AcquireRequest,
  ClusterNetwork,
  LeaseStore,
  NodeAttrs,
  NodeLease,
  StoreOptions,
  Watch,
} from './types.ts';

export interface EtcdStoreOptions extends StoreOptions {
  /** Client URLs, e.g. ["http://127.0.0.1:2379"]. */
  readonly endpoints: readonly string[];
  /** Cluster name: keys live under /flatnet/<cluster>/. Default "default". */
  readonly cluster?: string;
  /** Deadline for each etcd call (default 5 s); past it the call fails as retryable. */
  readonly callTimeoutMs?: number;
}

interface Claim {
  readonly node: string | null;
  readonly heldUntil: number;
  readonly since: number;
}

interface Snapshot {
  readonly claims: Map<string, { kv: IKeyValue; claim: Claim | undefined }>;
  readonly leases: Map<string, { kv: IKeyValue; lease: NodeLease | undefined; reason?: string }>;
}

const MAX_ATTEMPTS = 100;
const CLUSTER_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function subnetKey(subnet: string): string {
  return subnet.replace('/', '_');
}

function subnetOfKey(key: string): string {
  const i = key.lastIndexOf('_');
  return `${key.slice(0, i)}/${key.slice(i + 1)}`;
}

/** Errors that mean "etcd did not answer", marked retryable; anything else passes through wrapped once. */
function wrapEtcdError(what: string, e: unknown): Error {
  if (e instanceof LeaseLostError || e instanceof LeaseRequestError || e instanceof StoreUnavailableError) return e;
  const transient =
    e instanceof GRPCUnavailableError ||
    e instanceof GRPCDeadlineExceededError ||
    (e instanceof Error && isRecoverableError(e));
  if (transient) return new StoreUnavailableError(`etcd store: ${what}: etcd unreachable`, { cause: e });
  return new Error(`etcd store: ${what}`, { cause: e });
}

function parseClaim(text: string): Claim | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof raw !== 'object' || raw === null) return 'not a JSON object';
  const r = raw as Record<string, unknown>;
  if (r.node !== null && !isNodeName(r.node)) return `claim names invalid node ${JSON.stringify(r.node)}`;
  if (typeof r.heldUntil !== 'number' || !Number.isFinite(r.heldUntil)) return 'heldUntil is not a time';
  if (typeof r.since !== 'number' || !Number.isFinite(r.since)) return 'since is not a time';
  return { node: r.node, heldUntil: r.heldUntil, since: r.since };
}

export class EtcdStore implements LeaseStore {
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly grace: number;
  private readonly now: () => number;
  private readonly onInvalid: (key: string, reason: string) => void;
  private network: ClusterNetwork | undefined;
  private readonly watchers = new Set<Watcher>();
  private readonly held = new Map<string, readonly string[]>();

  constructor(opts: EtcdStoreOptions) {
    const cluster = opts.cluster ?? 'default';
    if (!CLUSTER_NAME.test(cluster)) throw new LeaseRequestError(`cluster name "${cluster}" is not a DNS-1123 label`);
    this.prefix = `/flatnet/${cluster}/`;
    const timeout = opts.callTimeoutMs ?? 5_000;
    this.client = new Etcd3({
      hosts: [...opts.endpoints],
      dialTimeout: timeout,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: { host: () => noop },
    });
    this.grace = opts.reuseGraceMs ?? DEFAULT_REUSE_GRACE_MS;
    this.now = opts.now ?? Date.now;
    const report = opts.onInvalid ?? (() => undefined);
    // Each bad record is reported once per version of it, not on every list (every resync).
    this.onInvalid = (key, reason) => {
      const id = `${key}\n${reason}`;
      if (this.reported.has(id)) return;
      this.reported.add(id);
      if (this.reported.size > 10_000) this.reported.clear();
      report(key, reason);
    };
    this.network = opts.network;
  }

  private readonly reported = new Set<string>();
  /** Parsed records by key, reused while the key's mod revision is unchanged: listing 5,000 leases every resync
   * then costs the read, not 10,000 JSON parses and validations. */
  private parsed = new Map<string, { rev: string; value: unknown }>();
  private nextParsed = new Map<string, { rev: string; value: unknown }>();

  private memo<T>(key: string, rev: string, compute: () => T): T {
    const hit = this.parsed.get(key);
    const value = hit && hit.rev === rev ? (hit.value as T) : compute();
    this.nextParsed.set(key, { rev, value });
    return value;
  }

  private async snapshot(): Promise<Snapshot> {
    let kvs: IKeyValue[];
    try {
      kvs = (await this.client.getAll().prefix(this.prefix).exec()).kvs;
    } catch (e) {
      throw wrapEtcdError(`cannot read ${this.prefix}`, e);
    }
    const claims: Snapshot['claims'] = new Map();
    const leases: Snapshot['leases'] = new Map();
    this.nextParsed = new Map();
    for (const kv of kvs) {
      const key = kv.key.toString('utf8');
      const rest = key.slice(this.prefix.length);
      if (rest.startsWith('subnets/')) {
        const subnet = subnetOfKey(rest.slice('subnets/'.length));
        const parsed = this.memo(key, kv.mod_revision, () => parseClaim(kv.value.toString('utf8')));
        if (typeof parsed === 'string') this.onInvalid(key, parsed);
        claims.set(subnet, { kv, claim: typeof parsed === 'string' ? undefined : parsed });
      } else if (rest.startsWith('leases/')) {
        const node = rest.slice('leases/'.length);
        const entry = this.memo(key, kv.mod_revision, (): { lease: NodeLease | undefined; reason?: string } => {
          let raw: unknown;
          try {
            raw = JSON.parse(kv.value.toString('utf8'));
          } catch {
            return { lease: undefined, reason: 'not JSON' };
          }
          const check = validateLease(raw);
          if (!check.ok) return { lease: undefined, reason: check.reason };
          if (check.lease.node !== node) return { lease: undefined, reason: `names node ${check.lease.node}` };
          return { lease: check.lease };
        });
        leases.set(node, { kv, ...entry });
      }
    }
    // Keep list()'s network validations of records that did not change; forget records that are gone, so
    // the cache never outgrows the store.
    for (const [key, v] of this.parsed) {
      if (key.endsWith('#network') && this.nextParsed.get(key.slice(0, -'#network'.length))?.rev === v.rev) this.nextParsed.set(key, v);
    }
    this.parsed = this.nextParsed;
    return { claims, leases };
  }

  /** Claims as the pure chooser sees them: a subnet listed by a live lease key is held indefinitely. */
  private claimsOf(snap: Snapshot): SubnetClaim[] {
    const out: SubnetClaim[] = [];
    for (const [subnet, { claim }] of snap.claims) {
      if (!claim) {
        // Unreadable claim: we cannot tell who holds it, so nobody gets it until someone fixes it.
        out.push({ node: '', podCIDRs: [subnet], heldUntil: Number.POSITIVE_INFINITY });
        continue;
      }
      const live = claim.node !== null && snap.leases.get(claim.node)?.lease?.podCIDRs.includes(subnet) === true;
      out.push({
        node: claim.node ?? '',
        podCIDRs: [subnet],
        heldUntil: live ? Number.POSITIVE_INFINITY : claim.heldUntil,
      });
    }
    return out;
  }

  private async grant(ttlMs: number): Promise<string> {
    try {
      const res = await this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)), ID: 0 });
      return res.ID;
    } catch (e) {
      throw wrapEtcdError('cannot grant an etcd lease', e);
    }
  }

  private async revoke(id: string): Promise<void> {
    if (id === '0') return;
    // Best effort: an unrevoked lease only lingers until its TTL.
    await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  /**
   * One transaction: the claims and lease key we read are unchanged (or still absent), then write
   * the new claims and lease key (or delete it). False when another writer got there first.
   */
  private async commit(
    snap: Snapshot,
    node: string,
    writes: readonly { subnet: string; claim: Claim }[],
    lease: { value: NodeLease; etcdLease: string } | null,
  ): Promise<boolean> {
    const leaseKey = `${this.prefix}leases/${node}`;
    let txn = this.client.if(leaseKey, 'Mod', '==', snap.leases.get(node)?.kv.mod_revision ?? '0');
    for (const w of writes) {
      const key = `${this.prefix}subnets/${subnetKey(w.subnet)}`;
      const prev = snap.claims.get(w.subnet);
      txn = prev ? txn.and(key, 'Mod', '==', prev.kv.mod_revision) : txn.and(key, 'Create', '==', 0);
    }
    const ops = writes.map((w) => ({
      request_put: {
        key: Buffer.from(`${this.prefix}subnets/${subnetKey(w.subnet)}`),
        value: Buffer.from(JSON.stringify(w.claim)),
      },
    }));
    const leaseOp = lease
      ? { request_put: { key: Buffer.from(leaseKey), value: Buffer.from(JSON.stringify(lease.value)), lease: lease.etcdLease } }
      : { request_delete_range: { key: Buffer.from(leaseKey) } };
    try {
      const res = await txn.then(...ops, leaseOp).commit();
      return res.succeeded;
    } catch (e) {
      throw wrapEtcdError(`cannot write the lease of ${node}`, e);
    }
  }

  async acquire(req: AcquireRequest): Promise<NodeLease> {
    if (!isNodeName(req.node)) throw new LeaseRequestError(`node name ${JSON.stringify(req.node)} is not a DNS-1123 subdomain`);
    try {
      poolsOf(req.network);
    } catch (e) {
      throw new LeaseRequestError(`cannot acquire a lease for ${req.node}`, { cause: e });
    }
    this.network ??= req.network;
    let etcdLease: string | undefined;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const snap = await this.snapshot();
        const now = this.now();
        const chosen = chooseSubnets(req.node, req.network, this.claimsOf(snap), { now, reuseGraceMs: this.grace });
        const check = validateLease({ node: req.node, podCIDRs: chosen, expiresAt: now + req.ttlMs, ...attrsOf(req) }, req.network);
        if (!check.ok) throw new LeaseRequestError(check.reason);
        const lease = check.lease;
        const writes: { subnet: string; claim: Claim }[] = chosen.map((subnet) => {
          const prev = snap.claims.get(subnet)?.claim;
          const since = prev?.node === req.node ? prev.since : now;
          return { subnet, claim: { node: req.node, heldUntil: lease.expiresAt, since } };
        });
        // Subnets this node held but no longer uses (the network changed) go back, with the grace.
        for (const [subnet, { claim }] of snap.claims) {
          if (claim?.node === req.node && !chosen.includes(subnet)) writes.push({ subnet, claim: { node: null, heldUntil: now, since: now } });
        }
        etcdLease ??= await this.grant(req.ttlMs);
        if (await this.commit(snap, req.node, writes, { value: lease, etcdLease })) {
          const old = snap.leases.get(req.node)?.kv.lease;
          if (old !== undefined && old !== etcdLease) await this.revoke(old);
          etcdLease = undefined;
          this.held.set(req.node, chosen);
          return lease;
        }
        await sleep(Math.random() * Math.min(50, 2 + attempt * 2));
      }
      throw new StoreUnavailableError(`etcd store: gave up acquiring a lease for ${req.node} after ${MAX_ATTEMPTS} lost races`);
    } finally {
      if (etcdLease !== undefined) await this.revoke(etcdLease);
    }
  }

  async renew(node: string, attrs: NodeAttrs, ttlMs: number): Promise<NodeLease> {
    let etcdLease: string | undefined;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const snap = await this.snapshot();
        const now = this.now();
        const owned = [...snap.claims].filter(([, c]) => c.claim?.node === node).map(([s]) => s);
        const expected = this.held.get(node) ?? snap.leases.get(node)?.lease?.podCIDRs ?? owned;
        if (expected.length === 0) throw new LeaseLostError(`node ${node} holds no lease`);
        for (const subnet of expected) {
          if (!owned.includes(subnet)) {
            const other = snap.claims.get(subnet)?.claim?.node;
            throw new LeaseLostError(`subnet ${subnet} of node ${node} is ${other ? `now held by ${other}` : 'released'}`);
          }
        }
        const check = validateLease({ node, podCIDRs: expected, expiresAt: now + ttlMs, ...attrsOf(attrs) }, this.network);
        if (!check.ok) throw new LeaseRequestError(check.reason);
        const lease = check.lease;
        const writes = expected.map((subnet) => ({
          subnet,
          claim: { node, heldUntil: lease.expiresAt, since: snap.claims.get(subnet)?.claim?.since ?? now },
        }));
        etcdLease ??= await this.grant(ttlMs);
        if (await this.commit(snap, node, writes, { value: lease, etcdLease })) {
          const old = snap.leases.get(node)?.kv.lease;
          if (old !== undefined && old !== etcdLease) await this.revoke(old);
          etcdLease = undefined;
          return lease;
        }
        await sleep(Math.random() * 5);
      }
      throw new StoreUnavailableError(`etcd store: gave up renewing the lease of ${node}`);
    } finally {
      if (etcdLease !== undefined) await this.revoke(etcdLease);
    }
  }

  async list(): Promise<readonly NodeLease[]> {
    const snap = await this.snapshot();
    const found: { lease: NodeLease; rev: bigint }[] = [];
    for (const [node, entry] of snap.leases) {
      const key = `${this.prefix}leases/${node}`;
      if (!entry.lease) {
        this.onInvalid(key, entry.reason ?? 'malformed');
        continue;
      }
      if (entry.kv.lease === '0') {
        this.onInvalid(key, 'not bound to an etcd lease, so it would never expire');
        continue;
      }
      const lease = entry.lease;
      const check = this.memo(`${key}#network`, entry.kv.mod_revision, () => validateLease(lease, this.network));
      if (!check.ok) {
        this.onInvalid(key, check.reason);
        continue;
      }
      const unclaimed = check.lease.podCIDRs.find((s) => snap.claims.get(s)?.claim?.node !== node);
      if (unclaimed !== undefined) {
        this.onInvalid(key, `lists ${unclaimed}, which is not claimed by ${node}`);
        continue;
      }
      found.push({ lease: check.lease, rev: BigInt(entry.kv.create_revision) });
    }
    found.sort((a, b) => (a.rev < b.rev ? -1 : a.rev > b.rev ? 1 : 0));
    const { kept, rejected } = rejectConflicts(found.map((f) => f.lease));
    for (const r of rejected) this.onInvalid(`${this.prefix}leases/${r.lease.node}`, r.reason);
    return kept;
  }

  watch(onChange: () => void): Watch {
    let closed = false;
    let watcher: Watcher | undefined;
    this.client
      .watch()
      .prefix(this.prefix)
      .create()
      .then((w) => {
        if (closed) {
          void w.cancel().catch(() => undefined);
          return;
        }
        watcher = w;
        this.watchers.add(w);
        w.on('put', () => onChange());
        w.on('delete', () => onChange());
        // After a reconnect events may have been missed: ask the caller to resync.
        w.on('connected', () => onChange());
        w.on('error', () => onChange());
      })
      .catch(() => onChange());
    return {
      close: () => {
        closed = true;
        if (watcher) {
          this.watchers.delete(watcher);
          void watcher.cancel().catch(() => undefined);
        }
      },
    };
  }

  async release(node: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const snap = await this.snapshot();
      const now = this.now();
      const writes = [...snap.claims]
        .filter(([, c]) => c.claim?.node === node)
        .map(([subnet]) => ({ subnet, claim: { node: null, heldUntil: now, since: now } }));
      const old = snap.leases.get(node)?.kv.lease;
      if (writes.length === 0 && old === undefined) break;
      if (await this.commit(snap, node, writes, null)) {
        if (old !== undefined) await this.revoke(old);
        break;
      }
    }
    this.held.delete(node);
  }

  async close(): Promise<void> {
    // Cancelling a watch needs etcd; do not let an outage keep close() waiting.
    const cancels = Promise.all([...this.watchers].map((w) => w.cancel().catch(() => undefined)));
    await Promise.race([cancels, sleep(1_000)]);
    this.watchers.clear();
    this.client.close();
  }
}

function attrsOf(a: NodeAttrs): NodeAttrs {
  return {
    underlayIPs: a.underlayIPs,
    backend: a.backend,
    ...(a.vtepMAC !== undefined ? { vtepMAC: a.vtepMAC } : {}),
  };
}
