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
// Reads are incremental. The store keeps one compact record per key (revisions and the parsed value,
// not etcd's buffers) and the revision they reflect; a read asks only for keys modified since then
// (min_mod_revision), and etcd's count of all keys under the prefix, which that filter does not change,
// tells whether any key was deleted: only then are the keys (without values) listed to find which.
// Listing 5,000 leases every resync therefore costs a read of what changed, not 10,000 keys' values
// decoded and parsed again, and list() returns the same array while nothing changed. Every read goes in
// pages of PAGE_KEYS keys at one revision, so no single response holds the whole prefix (the first read,
// or one after etcd's history went back, reads it all; gRPC's default limit is 4 MB, ~13,000 leases).
//
// Costs: acquire and renew are one range read of what changed, one lease grant, one transaction and
// one lease revoke (~1 ms each on a local etcd); a lost race costs another read and transaction.
// Renewal grants a fresh etcd lease instead of streaming keepalives, so any store instance can
// renew any node and a restarted agent needs no local state. heldUntil uses the writer's clock:
// keep the grace well above the clock skew between nodes.

import { Etcd3, isRecoverableError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import type { IKeyValue, IRangeRequest, Watcher } from 'etcd3';
// etcd3's default per-host circuit breaker fails every call for 5 s after three failures, with an
// error that is not marked recoverable; callers here already retry with backoff, so calls go
// straight through and an outage ends as soon as etcd answers again.
import { noop } from 'cockatiel';
import { assertAcquirable, chooseSubnets, isNodeName, rejectConflicts, validateLease } from './subnets.ts';
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
  /**
   * PEM material for https endpoints: the CA that signed etcd's certificate (default: the system's CAs),
   * and a client certificate with its key for an etcd that checks clients (--client-cert-auth).
   */
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  /** etcd user and password (etcd's role-based auth); the client trades them for a token. */
  readonly auth?: { readonly username: string; readonly password: string };
}

/** What EtcdStore.replaceCredentials takes: the TLS material and user of a new client. */
export type EtcdCredentialSet = Pick<EtcdStoreOptions, 'tls' | 'auth'>;

/** One caller of watch(): its callback, and the etcd watcher serving it on the current client. */
interface Subscription {
  readonly onChange: () => void;
  watcher: Watcher | undefined;
  closed: boolean;
}

/** How long a replaced client is kept for the calls still under way on it. */
const RETIRE_AFTER_MS = 10_000;

interface Claim {
  readonly node: string | null;
  readonly heldUntil: number;
  readonly since: number;
}

interface ClaimEntry {
  readonly kind: 'claim';
  readonly subnet: string;
  /** The key's mod revision: what a transaction compares. */
  readonly mod: string;
  readonly claim: Claim | undefined;
}

interface LeaseEntry {
  readonly kind: 'lease';
  readonly node: string;
  readonly mod: string;
  readonly create: string;
  /** ID of the etcd lease the key is bound to ("0": none). */
  readonly etcdLease: string;
  readonly lease: NodeLease | undefined;
  readonly reason?: string;
}

/** One key under the prefix as the store remembers it; `other` keys are kept only so the count matches etcd's. */
type KeyRecord = ClaimEntry | LeaseEntry | { readonly kind: 'other'; readonly mod: string };

/** The records by subnet and by node; never changed once built (a read builds a new one), so it can be held across awaits. */
interface Snapshot {
  readonly claims: ReadonlyMap<string, ClaimEntry>;
  readonly leases: ReadonlyMap<string, LeaseEntry>;
}

const MAX_ATTEMPTS = 100;
/** Keys per range response on full reads: ~300 KB of leases and claims. */
const PAGE_KEYS = 1_000;
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
  // gRPC's reason (a refused connection, a certificate it does not trust, a client certificate etcd refused)
  // goes into the message: it is what an operator needs from the log line.
  const reason = e instanceof Error ? e.message.split('\n')[0]?.slice(0, 300) : undefined;
  if (transient) return new StoreUnavailableError(`etcd store: ${what}: etcd unreachable${reason ? ` (${reason})` : ''}`, { cause: e });
  return new Error(`etcd store: ${what}${reason ? `: ${reason}` : ''}`, { cause: e });
}

/** The first key after every key that starts with `prefix` (a range's exclusive end). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end.writeUInt8((end.at(-1) ?? 0) + 1, end.length - 1);
  return end;
}

/** Orders two revisions (decimal int64 text, no leading zeros) without parsing them. */
export function compareRevisions(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
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
  private client: Etcd3;
  private readonly endpoints: readonly string[];
  private readonly timeout: number;
  /** Clients replaced by replaceCredentials, closed once the calls started on them have had their time. */
  private readonly retiring = new Set<Etcd3>();
  private readonly grace: number;
  private readonly now: () => number;
  private readonly onInvalid: (key: string, reason: string) => void;
  private network: ClusterNetwork | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private readonly held = new Map<string, readonly string[]>();

  constructor(opts: EtcdStoreOptions) {
    const cluster = opts.cluster ?? 'default';
    if (!CLUSTER_NAME.test(cluster)) throw new LeaseRequestError(`cluster name "${cluster}" is not a DNS-1123 label`);
    this.prefix = `/flatnet/${cluster}/`;
    this.timeout = opts.callTimeoutMs ?? 5_000;
    this.endpoints = [...opts.endpoints];
    if (this.secure() && this.endpoints.some((e) => !e.startsWith('https://'))) throw new LeaseRequestError('etcd endpoints mix http and https');
    this.client = this.connect(opts);
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

  private secure(): boolean {
    return this.endpoints.some((e) => e.startsWith('https://'));
  }

  private connect(c: EtcdCredentialSet): Etcd3 {
    const tls = c.tls;
    if (tls && !this.secure()) throw new LeaseRequestError('etcd TLS files are given but the endpoints are http');
    const timeout = this.timeout;
    return new Etcd3({
      hosts: [...this.endpoints],
      // grpc takes null for "the system's CAs"; etcd3's type wants a Buffer.
      ...(tls ? { credentials: { rootCertificate: (tls.ca ?? null) as Buffer, ...(tls.key ? { privateKey: tls.key } : {}), ...(tls.cert ? { certChain: tls.cert } : {}) } } : {}),
      ...(c.auth ? { auth: { username: c.auth.username, password: c.auth.password } } : {}),
      dialTimeout: timeout,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: { host: () => noop },
    });
  }

  /**
   * Talks to etcd with new credentials from now on (a rotated client certificate, CA or password), without
   * a restart: calls from here on use a new client, every watch moves to it (and its caller resyncs, as
   * after a reconnect), and the old client is closed once calls already under way on it have had their
   * deadline. Nothing about the leases changes.
   */
  replaceCredentials(c: EtcdCredentialSet): void {
    const next = this.connect(c);
    const old = this.client;
    this.client = next;
    for (const sub of this.subscriptions) {
      const w = sub.watcher;
      sub.watcher = undefined;
      if (w) void w.cancel().catch(() => undefined);
      this.subscribe(sub);
    }
    // What happened between the old watchers and the new ones is not known: every caller resyncs.
    for (const sub of this.subscriptions) sub.onChange();
    this.retiring.add(old);
    setTimeout(() => {
      if (this.retiring.delete(old)) old.close();
    }, Math.max(RETIRE_AFTER_MS, this.timeout * 2)).unref();
  }

  private readonly reported = new Set<string>();
  /** Every key under the prefix, by key, as of revision `rev` (undefined before the first read). */
  private records = new Map<string, KeyRecord>();
  private rev: bigint | undefined;
  /** Built from `records` on demand and dropped when a read changes them. */
  private view: Snapshot | undefined;
  private listed: readonly NodeLease[] | undefined;
  /** list()'s network validation of each lease record (records are replaced, never changed, when their key is). */
  private readonly checked = new WeakMap<LeaseEntry, { network: ClusterNetwork | undefined; check: ReturnType<typeof validateLease> }>();
  private reading: Promise<void> = Promise.resolve();

  /** Brings `records` up to etcd's current revision. One read at a time: responses applied out of order could move them back. */
  private refresh(): Promise<void> {
    const next = this.reading.then(() => this.read());
    this.reading = next.catch(() => undefined);
    return next;
  }

  private async read(): Promise<void> {
    try {
      if (this.rev === undefined) await this.readAll();
      else await this.readChanges(this.rev);
    } catch (e) {
      throw wrapEtcdError(`cannot read ${this.prefix}`, e);
    }
  }

  private async readAll(): Promise<void> {
    const fresh = new Map<string, KeyRecord>();
    const { rev } = await this.pages({}, (key, kv) => {
      const prev = this.records.get(key);
      fresh.set(key, prev?.mod === kv.mod_revision ? prev : this.recordOf(key, kv));
    });
    this.records = fresh;
    this.rev = rev;
    this.changed();
  }

  private async readChanges(since: bigint): Promise<void> {
    // Records change as pages arrive (a later page failing leaves them between two revisions, which the
    // next read, again from `since`, completes), so what was built from them goes at once.
    const { rev, count } = await this.pages({ min_mod_revision: String(since + 1n) }, (key, kv) => {
      if (this.records.get(key)?.mod === kv.mod_revision) return;
      this.records.set(key, this.recordOf(key, kv));
      this.changed();
    });
    // etcd's history went back (restored from a backup, or another cluster behind the same address).
    if (rev < since) return this.readAll();
    // Every key we knew is still there exactly when the counts agree (new keys all came with this read).
    if (this.records.size !== count) {
      const present = new Set<string>();
      await this.pages({ keys_only: true }, (key) => present.add(key), rev);
      for (const key of this.records.keys()) {
        if (!present.has(key)) {
          this.records.delete(key);
          this.changed();
        }
      }
    }
    this.rev = rev;
  }

  /**
   * Reads the prefix in pages, all at one revision (the first page's, unless given); visits every key returned.
   * Returns that revision and etcd's count of all keys under the prefix (not narrowed by min_mod_revision).
   */
  private async pages(
    req: Pick<IRangeRequest, 'min_mod_revision' | 'keys_only'>,
    visit: (key: string, kv: IKeyValue) => void,
    revision?: bigint,
  ): Promise<{ rev: bigint; count: number }> {
    const end = prefixEnd(this.prefix);
    let from = Buffer.from(this.prefix);
    let rev = revision;
    let count: number | undefined;
    for (;;) {
      const res = await this.client.kv.range({
        ...req,
        key: from,
        range_end: end,
        limit: PAGE_KEYS,
        ...(rev !== undefined ? { revision: String(rev) } : {}),
      });
      rev ??= BigInt(res.header.revision);
      count ??= Number(res.count);
      for (const kv of res.kvs) visit(kv.key.toString('utf8'), kv);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) return { rev, count };
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  private recordOf(key: string, kv: IKeyValue): KeyRecord {
    const rest = key.slice(this.prefix.length);
    const mod = kv.mod_revision;
    if (rest.startsWith('subnets/')) {
      const parsed = parseClaim(kv.value.toString('utf8'));
      if (typeof parsed === 'string') this.onInvalid(key, parsed);
      return { kind: 'claim', subnet: subnetOfKey(rest.slice('subnets/'.length)), mod, claim: typeof parsed === 'string' ? undefined : parsed };
    }
    if (rest.startsWith('leases/')) {
      const node = rest.slice('leases/'.length);
      const common = { kind: 'lease', node, mod, create: kv.create_revision, etcdLease: kv.lease } as const;
      let raw: unknown;
      try {
        raw = JSON.parse(kv.value.toString('utf8'));
      } catch {
        return { ...common, lease: undefined, reason: 'not JSON' };
      }
      const check = validateLease(raw);
      if (!check.ok) return { ...common, lease: undefined, reason: check.reason };
      if (check.lease.node !== node) return { ...common, lease: undefined, reason: `names node ${check.lease.node}` };
      return { ...common, lease: check.lease };
    }
    return { kind: 'other', mod };
  }

  private changed(): void {
    this.view = undefined;
    this.listed = undefined;
  }

  private async snapshot(): Promise<Snapshot> {
    await this.refresh();
    if (this.view) return this.view;
    const claims = new Map<string, ClaimEntry>();
    const leases = new Map<string, LeaseEntry>();
    for (const r of this.records.values()) {
      if (r.kind === 'claim') claims.set(r.subnet, r);
      else if (r.kind === 'lease') leases.set(r.node, r);
    }
    return (this.view = { claims, leases });
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
    let txn = this.client.if(leaseKey, 'Mod', '==', snap.leases.get(node)?.mod ?? '0');
    for (const w of writes) {
      const key = `${this.prefix}subnets/${subnetKey(w.subnet)}`;
      const prev = snap.claims.get(w.subnet);
      txn = prev ? txn.and(key, 'Mod', '==', prev.mod) : txn.and(key, 'Create', '==', 0);
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
    assertAcquirable(req);
    if (this.network === undefined) {
      this.network = req.network;
      this.listed = undefined;
    }
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
          const old = snap.leases.get(req.node)?.etcdLease;
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
          const old = snap.leases.get(node)?.etcdLease;
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

  /** The same array while no key changed: callers may compare it by identity to skip work. */
  async list(): Promise<readonly NodeLease[]> {
    const snap = await this.snapshot();
    if (this.listed) return this.listed;
    const found: { lease: NodeLease; create: string }[] = [];
    for (const [node, entry] of snap.leases) {
      const key = `${this.prefix}leases/${node}`;
      if (!entry.lease) {
        this.onInvalid(key, entry.reason ?? 'malformed');
        continue;
      }
      if (entry.etcdLease === '0') {
        this.onInvalid(key, 'not bound to an etcd lease, so it would never expire');
        continue;
      }
      let memo = this.checked.get(entry);
      if (!memo || memo.network !== this.network) {
        memo = { network: this.network, check: validateLease(entry.lease, this.network) };
        this.checked.set(entry, memo);
      }
      const check = memo.check;
      if (!check.ok) {
        this.onInvalid(key, check.reason);
        continue;
      }
      const unclaimed = check.lease.podCIDRs.find((s) => snap.claims.get(s)?.claim?.node !== node);
      if (unclaimed !== undefined) {
        this.onInvalid(key, `lists ${unclaimed}, which is not claimed by ${node}`);
        continue;
      }
      found.push({ lease: check.lease, create: entry.create });
    }
    // Oldest first, so every agent keeps the same one of two conflicting leases (ties: one transaction, by name).
    found.sort((a, b) => compareRevisions(a.create, b.create) || (a.lease.node < b.lease.node ? -1 : a.lease.node > b.lease.node ? 1 : 0));
    const { kept, rejected } = rejectConflicts(found.map((f) => f.lease));
    for (const r of rejected) this.onInvalid(`${this.prefix}leases/${r.lease.node}`, r.reason);
    this.listed = kept;
    return kept;
  }

  watch(onChange: () => void): Watch {
    const sub: Subscription = { onChange, watcher: undefined, closed: false };
    this.subscriptions.add(sub);
    this.subscribe(sub);
    return {
      close: () => {
        sub.closed = true;
        this.subscriptions.delete(sub);
        const w = sub.watcher;
        sub.watcher = undefined;
        if (w) void w.cancel().catch(() => undefined);
      },
    };
  }

  /** Starts `sub`'s etcd watcher on the current client (again, after replaceCredentials). */
  private subscribe(sub: Subscription): void {
    const client = this.client;
    client
      .watch()
      .prefix(this.prefix)
      .create()
      .then((w) => {
        // Closed, or the client replaced, while this watcher was being created.
        if (sub.closed || client !== this.client || sub.watcher !== undefined) {
          void w.cancel().catch(() => undefined);
          return;
        }
        sub.watcher = w;
        w.on('put', () => sub.onChange());
        w.on('delete', () => sub.onChange());
        // After a reconnect events may have been missed: ask the caller to resync.
        w.on('connected', () => sub.onChange());
        w.on('error', () => sub.onChange());
      })
      .catch(() => sub.onChange());
  }

  async release(node: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const snap = await this.snapshot();
      const now = this.now();
      const writes = [...snap.claims]
        .filter(([, c]) => c.claim?.node === node)
        .map(([subnet]) => ({ subnet, claim: { node: null, heldUntil: now, since: now } }));
      const old = snap.leases.get(node)?.etcdLease;
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
    const watchers = [...this.subscriptions].flatMap((sub) => {
      sub.closed = true;
      return sub.watcher ? [sub.watcher] : [];
    });
    this.subscriptions.clear();
    const cancels = Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
    await Promise.race([cancels, sleep(1_000)]);
    this.client.close();
    for (const c of this.retiring) c.close();
    this.retiring.clear();
  }
}

function attrsOf(a: NodeAttrs): NodeAttrs {
  return {
    underlayIPs: a.underlayIPs,
    backend: a.backend,
    ...(a.vtepMAC !== undefined ? { vtepMAC: a.vtepMAC } : {}),
  };
}
