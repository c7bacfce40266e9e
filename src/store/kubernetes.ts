// KubeStore: the lease store on the Kubernetes API, for clusters that already run one.
//
// Where the subnets come from. In this mode flatnet allocates nothing: a node's pod subnets are its
// Node object's spec.podCIDRs, which kube-controller-manager assigns (--allocate-node-cidrs, with
// --cluster-cidr and --node-cidr-mask-size matching flatnetd's --cluster-cidr and --node-prefix-v4/v6),
// as kindnet and flannel's kube subnet manager use them. The API server's allocator keeps them disjoint;
// flatnet still checks every lease it reads (inside the cluster CIDRs, the node size, no overlap with an
// older node's, no underlay address published twice) and skips and reports what fails.
//
// What flatnet writes: annotations on its own Node object, nothing else, with one JSON merge patch:
//   flatnet.dev/underlay-ips    "192.168.1.10" or "192.168.1.10,fd00::10"
//   flatnet.dev/backend         "host-gw" or "vxlan"
//   flatnet.dev/vtep-mac        the VXLAN endpoint's MAC (vxlan only)
// The Node object is the lease: it holds while the Node exists with those annotations, as in flannel's
// kube subnet manager and kindnet. There is no expiry to renew, on purpose: every write to a Node goes to
// every Node watcher in the cluster (the scheduler, controllers, every agent), which is why kubelets
// heartbeat through Lease objects instead (KEP-589); a renewal every few seconds from every node would be
// that load again. So renew() writes only when the attributes changed, and reads the agent's own Node from
// the watch's copy when it can. A node whose agent died keeps its routes (its datapath still works); a
// node that is gone is deleted from the API, and peers withdraw its routes on the watch's event.
//
// What this store cannot do: hold a freed subnet back for reuseGraceMs. Once a Node object is deleted,
// kube-controller-manager may give its CIDR to a new node at once. Peers whose agent runs withdraw the
// old route as soon as the watch reports the deletion; a peer whose agent is down keeps it until that
// agent starts and resyncs (docs/agent.md, "Stores").
//
// Calls: acquire is one GET, one LIST (to refuse a podCIDR an older node's record contradicts) and a PATCH
// unless the annotations are already there; renew writes only a change. Leases are read the way client-go's informers read: one
// LIST, then one WATCH of nodes kept open and applied to a local copy, resumed from the last
// resourceVersion after a break and listed afresh after 410 Gone; list() answers from that copy while the
// watch is open, and asks the API server only while it is not. Every call has a deadline; a failure to get
// an answer is retryable.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingMessage, RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { assertAcquirable, rejectConflicts, validateLease } from './subnets.ts';
import { LeaseLostError, LeaseRequestError, StoreUnavailableError } from './types.ts';
import type { AcquireRequest, ClusterNetwork, LeaseStore, NodeAttrs, NodeLease, StoreOptions, Watch } from './types.ts';

export const ANNOTATION = {
  underlayIPs: 'flatnet.dev/underlay-ips',
  backend: 'flatnet.dev/backend',
  vtepMAC: 'flatnet.dev/vtep-mac',
} as const;

export interface KubeStoreOptions extends StoreOptions {
  /** API server URL, e.g. "https://10.96.0.1:443". */
  readonly server: string;
  /** Bearer token file, read again on every call (service account tokens rotate). None: no Authorization header. */
  readonly tokenFile?: string;
  /** PEM bundle to verify an https server with (default: Node's CA store). */
  readonly caFile?: string;
  /** Deadline for each call (default 5 s); past it the call fails as retryable. */
  readonly callTimeoutMs?: number;
}

/** The parts of a Node object this store reads. */
export interface NodeObject {
  readonly metadata?: {
    readonly name?: unknown;
    readonly creationTimestamp?: unknown;
    readonly annotations?: Record<string, unknown> | null;
  };
  readonly spec?: { readonly podCIDR?: unknown; readonly podCIDRs?: unknown };
}

/** The node's assigned pod CIDRs: spec.podCIDRs, or the older single spec.podCIDR. */
function podCIDRsOf(node: NodeObject): unknown[] {
  const spec = node.spec ?? {};
  if (Array.isArray(spec.podCIDRs) && spec.podCIDRs.length > 0) return spec.podCIDRs as unknown[];
  return typeof spec.podCIDR === 'string' && spec.podCIDR !== '' ? [spec.podCIDR] : [];
}

/** A lease here lasts as long as its Node: the expiry every NodeLease carries is "never". */
const HELD_WHILE_THE_NODE_EXISTS = Number.MAX_SAFE_INTEGER;

/** The annotations that publish `attrs` (null removes a key in a merge patch). */
function leaseAnnotations(attrs: NodeAttrs): Record<string, string | null> {
  return {
    [ANNOTATION.underlayIPs]: attrs.underlayIPs.join(','),
    [ANNOTATION.backend]: attrs.backend,
    [ANNOTATION.vtepMAC]: attrs.vtepMAC ?? null,
  };
}

/** Whether the Node already carries exactly these annotations (then there is nothing to write). */
function publishes(node: NodeObject, want: Record<string, string | null>): boolean {
  const have = node.metadata?.annotations ?? {};
  return Object.entries(want).every(([k, v]) => (v === null ? have[k] === undefined || have[k] === null : have[k] === v));
}

/** The Node as it will be once `attrs` are published (a merge patch: null removes a key). */
function withLease(node: NodeObject, attrs: NodeAttrs): NodeObject {
  const annotations: Record<string, unknown> = { ...node.metadata?.annotations };
  for (const [k, v] of Object.entries(leaseAnnotations(attrs))) {
    if (v === null) delete annotations[k];
    else annotations[k] = v;
  }
  return { ...node, metadata: { ...node.metadata, annotations } };
}

export type NodeLeaseCheck =
  | { readonly kind: 'lease'; readonly lease: NodeLease }
  /** No flatnet annotations: no agent has published this node (yet); not an error. */
  | { readonly kind: 'unpublished' }
  | { readonly kind: 'invalid'; readonly reason: string };

/**
 * A Node object as a NodeLease, checked like a record of any other store (validateLease), or why not.
 * Pure: test/unit/store-kubernetes-node.test.ts checks it without a server.
 */
export function leaseOfNode(node: NodeObject, network?: ClusterNetwork): NodeLeaseCheck {
  const a = node.metadata?.annotations ?? {};
  const name = node.metadata?.name;
  if (a[ANNOTATION.underlayIPs] === undefined && a[ANNOTATION.backend] === undefined) return { kind: 'unpublished' };
  const text = (key: string): string | undefined => (typeof a[key] === 'string' ? a[key] : undefined);
  const raw = {
    node: name,
    podCIDRs: podCIDRsOf(node),
    expiresAt: HELD_WHILE_THE_NODE_EXISTS,
    underlayIPs: text(ANNOTATION.underlayIPs)?.split(',') ?? a[ANNOTATION.underlayIPs],
    backend: a[ANNOTATION.backend],
    // null is how a merge patch removes a key: absent.
    ...(a[ANNOTATION.vtepMAC] !== undefined && a[ANNOTATION.vtepMAC] !== null ? { vtepMAC: a[ANNOTATION.vtepMAC] } : {}),
  };
  if (raw.podCIDRs.length === 0) return { kind: 'invalid', reason: `node ${String(name)}: has flatnet annotations but no spec.podCIDRs` };
  const check = validateLease(raw, network);
  return check.ok ? { kind: 'lease', lease: check.lease } : { kind: 'invalid', reason: check.reason };
}

function creationTime(node: NodeObject): number {
  const t = node.metadata?.creationTimestamp;
  const ms = typeof t === 'string' ? Date.parse(t) : NaN;
  return Number.isFinite(ms) ? ms : Number.MAX_SAFE_INTEGER;
}

/** An answer that retrying will not change (a 4xx other than 401/403/429), with the API's Status message. */
class ApiError extends Error {
  override readonly name = 'ApiError';
}

interface Answer {
  readonly status: number;
  readonly body: unknown;
}

const LIST_PAGE = 500;

export class KubeStore implements LeaseStore {
  private readonly url: URL;
  private readonly tokenFile: string | undefined;
  private readonly ca: Buffer | undefined;
  private readonly timeoutMs: number;
  private readonly agent: HttpAgent;
  private network: ClusterNetwork | undefined;
  private readonly onInvalid: (key: string, reason: string) => void;
  /** Per node, the CIDRs its lease was acquired with: a renewal that finds others has lost the lease. */
  private readonly held = new Map<string, readonly string[]>();
  private closed = false;
  // The informer (as client-go calls it): one LIST, then one WATCH kept open, applied to a copy of every
  // Node. While the watch is open, list() reads that copy instead of asking the API server: 5,000 agents
  // listing 5,000 nodes every resync would be the API server's biggest load, where a watch costs it only
  // the changes. Started by the first watch() or list(); stopped by close().
  private informer: AbortController | undefined;
  private readonly cache = new Map<string, NodeObject>();
  /** Bumped on every change to the cache (and every relist). */
  private cacheGen = 0;
  /** The watch stream is open, so the cache is the server's state up to the last event. */
  private connected = false;
  private readonly listeners = new Set<() => void>();
  /** list()'s last answer from the cache, reused while the cache has not changed (leases here do not expire). */
  private memo: { readonly gen: number; readonly leases: readonly NodeLease[] } | undefined;
  /** Each cached Node object's lease check, so an unchanged node is not parsed again on every list(). */
  private checked = new WeakMap<NodeObject, NodeLeaseCheck>();

  constructor(opts: KubeStoreOptions) {
    let url: URL;
    try {
      url = new URL(opts.server);
    } catch {
      throw new LeaseRequestError(`Kubernetes API server "${opts.server}" is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new LeaseRequestError(`Kubernetes API server "${opts.server}" is not an http(s) URL`);
    this.url = url;
    this.tokenFile = opts.tokenFile;
    try {
      this.ca = opts.caFile !== undefined ? readFileSync(opts.caFile) : undefined;
    } catch (e) {
      throw new LeaseRequestError(`cannot read the Kubernetes CA file ${opts.caFile ?? ''}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    this.timeoutMs = opts.callTimeoutMs ?? 5_000;
    this.agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, ...(this.ca ? { ca: this.ca } : {}) }) : new HttpAgent({ keepAlive: true });
    this.network = opts.network;
    const report = opts.onInvalid ?? (() => undefined);
    // Report each distinct problem once per record, not on every list.
    const seen = new Map<string, string>();
    this.onInvalid = (key, reason) => {
      if (seen.get(key) === reason) return;
      seen.set(key, reason);
      report(key, reason);
    };
  }

  async acquire(req: AcquireRequest): Promise<NodeLease> {
    assertAcquirable(req);
    if (!this.network) {
      // Checks made so far were without a network to check against.
      this.network = req.network;
      this.checked = new WeakMap();
      this.memo = undefined;
    }
    const node = await this.getNode(req.node);
    if (!node) throw new StoreUnavailableError(`kubernetes store: node ${req.node} is not registered with the API server yet`);
    if (podCIDRsOf(node).length === 0) {
      throw new StoreUnavailableError(
        `kubernetes store: node ${req.node} has no spec.podCIDRs yet (kube-controller-manager assigns them with --allocate-node-cidrs)`,
      );
    }
    // Checked before anything is written: a CIDR the controller-manager sized or placed differently from
    // flatnetd's own --cluster-cidr/--node-prefix is a configuration error, not something to route.
    const candidate = leaseOfNode(withLease(node, req), req.network);
    if (candidate.kind !== 'lease') {
      const reason = candidate.kind === 'invalid' ? candidate.reason : 'unpublished';
      throw new LeaseRequestError(`kubernetes store: cannot use the spec.podCIDRs of node ${req.node}: ${reason}`);
    }
    await this.assertNoConflict(candidate.lease, node);
    const lease = await this.publish(node, req.node, req);
    this.held.set(req.node, lease.podCIDRs);
    return lease;
  }

  /**
   * Checks that the node still has its podCIDRs and writes its annotations only if they changed (there is
   * no expiry to move; see the top of this file). The node comes from the watch's copy while the watch is
   * open, so a steady renewal costs the API server nothing.
   */
  async renew(node: string, attrs: NodeAttrs, _ttlMs: number): Promise<NodeLease> {
    const obj = this.connected ? this.cache.get(node) : await this.getNode(node);
    if (!obj) throw new LeaseLostError(`node ${node} was deleted from the API server`);
    const want = leaseOfNode(withLease(obj, attrs), this.network);
    if (want.kind !== 'lease') throw new LeaseLostError(`node ${node}: ${want.kind === 'invalid' ? want.reason : 'no lease'}`);
    const held = this.held.get(node);
    if (held && (held.length !== want.lease.podCIDRs.length || held.some((c, i) => c !== want.lease.podCIDRs[i]))) {
      throw new LeaseLostError(`the spec.podCIDRs of node ${node} changed from ${held.join(',')} to ${want.lease.podCIDRs.join(',')}`);
    }
    const lease = await this.publish(obj, node, attrs);
    this.held.set(node, lease.podCIDRs);
    return lease;
  }

  async list(): Promise<readonly NodeLease[]> {
    this.startInformer();
    if (this.connected) {
      if (this.memo?.gen !== this.cacheGen) this.memo = { gen: this.cacheGen, leases: this.leasesOf([...this.cache.values()]) };
      return this.memo.leases;
    }
    // The watch is down (not started yet, or the server is unreachable): ask, and fail as retryable if that
    // fails too, so an outage shows as one. The cache is left to the informer's own stream.
    return this.leasesOf((await this.listNodes()).items);
  }

  private leasesOf(items: readonly NodeObject[]): readonly NodeLease[] {
    const found = this.datedLeases(items, true);
    const { kept, rejected } = rejectConflicts(found.map((f) => f.lease));
    for (const r of rejected) this.onInvalid(`node/${r.lease.node}`, r.reason);
    return kept;
  }

  /** The leases among `items`, oldest node first: of two contradicting records, the older node's wins. */
  private datedLeases(items: readonly NodeObject[], report: boolean): { lease: NodeLease; since: number }[] {
    const found: { lease: NodeLease; since: number }[] = [];
    for (const item of items) {
      let check = this.checked.get(item);
      if (!check) {
        check = leaseOfNode(item, this.network);
        this.checked.set(item, check);
      }
      if (check.kind === 'invalid' && report) this.onInvalid(`node/${String(item.metadata?.name)}`, check.reason);
      if (check.kind !== 'lease') continue;
      found.push({ lease: check.lease, since: creationTime(item) });
    }
    found.sort((a, b) => a.since - b.since || (a.lease.node < b.lease.node ? -1 : 1));
    return found;
  }

  watch(onChange: () => void): Watch {
    // A function of its own, so that one callback registered twice is two registrations.
    const listener = (): void => onChange();
    this.listeners.add(listener);
    this.startInformer();
    return { close: () => this.listeners.delete(listener) };
  }

  /** Whether the watch is open, so that list() answers from its copy without asking the API server. */
  get watching(): boolean {
    return this.connected;
  }

  private startInformer(): void {
    if (this.informer || this.closed) return;
    this.informer = new AbortController();
    void this.informerLoop(this.informer.signal);
  }

  private changed(): void {
    this.cacheGen++;
    for (const l of this.listeners) l();
  }

  async release(node: string): Promise<void> {
    const nulls = Object.fromEntries(Object.values(ANNOTATION).map((k) => [k, null]));
    const r = await this.call('PATCH', `/api/v1/nodes/${encodeURIComponent(node)}`, { metadata: { annotations: nulls } });
    if (r.status !== 200 && r.status !== 404) throw this.failure(`release node ${node}`, r);
    this.held.delete(node);
  }

  close(): Promise<void> {
    this.closed = true;
    this.informer?.abort();
    this.listeners.clear();
    this.agent.destroy();
    return Promise.resolve();
  }

  /** Writes the lease annotations unless `current` already carries them; returns the lease as the server has it. */
  private async publish(current: NodeObject, node: string, attrs: NodeAttrs): Promise<NodeLease> {
    const want = leaseAnnotations(attrs);
    let now = current;
    if (!publishes(current, want)) {
      const r = await this.call('PATCH', `/api/v1/nodes/${encodeURIComponent(node)}`, { metadata: { annotations: want } });
      if (r.status === 404) throw new LeaseLostError(`node ${node} was deleted from the API server`);
      if (r.status !== 200) throw this.failure(`patch node ${node}`, r);
      now = r.body as NodeObject;
    }
    const check = leaseOfNode(now, this.network);
    if (check.kind !== 'lease') throw new LeaseLostError(`node ${node} after the patch: ${check.kind === 'invalid' ? check.reason : 'no lease'}`);
    return check.lease;
  }

  /** Refuses a lease that an older node's record contradicts (a hand-edited spec; the allocator never does this). */
  private async assertNoConflict(mine: NodeLease, self: NodeObject): Promise<void> {
    const { items } = await this.listNodes();
    const since = creationTime(self);
    const older = this.datedLeases(items, false).filter((f) => f.lease.node !== mine.node && f.since <= since);
    const { rejected } = rejectConflicts([...older.map((f) => f.lease), mine]);
    const hit = rejected.find((r) => r.lease.node === mine.node);
    if (hit) throw new LeaseRequestError(`kubernetes store: ${hit.reason}`);
  }

  private async getNode(name: string): Promise<NodeObject | undefined> {
    const r = await this.call('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw this.failure(`get node ${name}`, r);
    return r.body as NodeObject;
  }

  private async listNodes(): Promise<{ items: NodeObject[]; version: string | undefined }> {
    const items: NodeObject[] = [];
    let cont = '';
    let version: string | undefined;
    for (;;) {
      const r = await this.call('GET', `/api/v1/nodes?limit=${LIST_PAGE}${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
      if (r.status === 410 && cont !== '') {
        // The continue token expired mid-list: start over, at a newer version.
        items.length = 0;
        cont = '';
        continue;
      }
      if (r.status !== 200) throw this.failure('list nodes', r);
      const body = r.body as { items?: unknown; metadata?: { continue?: unknown; resourceVersion?: unknown } };
      if (Array.isArray(body.items)) items.push(...(body.items as NodeObject[]));
      cont = typeof body.metadata?.continue === 'string' ? body.metadata.continue : '';
      version = typeof body.metadata?.resourceVersion === 'string' ? body.metadata.resourceVersion : version;
      if (cont === '') break;
    }
    return { items, version };
  }

  /**
   * The informer's loop: LIST into the cache, then WATCH from that version and apply every event; each
   * change tells the watchers (they debounce and resync). When the stream breaks or the server is
   * unreachable, the watch resumes from the last version it saw, so nothing is missed; after a 410 (that
   * version is gone from the server's history) it lists afresh.
   */
  private async informerLoop(signal: AbortSignal): Promise<void> {
    let version: string | undefined;
    let failures = 0;
    while (!signal.aborted && !this.closed) {
      try {
        if (version === undefined) {
          const listed = await this.listNodes();
          this.cache.clear();
          for (const n of listed.items) if (typeof n.metadata?.name === 'string') this.cache.set(n.metadata.name, n);
          version = listed.version;
          this.changed(); // anything may have changed since the watchers last heard
        }
        const query = `watch=1&allowWatchBookmarks=true&timeoutSeconds=300${version ? `&resourceVersion=${encodeURIComponent(version)}` : ''}`;
        const res = await this.open('GET', `/api/v1/nodes?${query}`, undefined, signal, false);
        if (res.statusCode === 410) {
          res.resume();
          version = undefined;
          continue;
        }
        if (res.statusCode !== 200) {
          const body = await readBody(res).catch(() => '');
          throw new ApiError(`watch nodes: HTTP ${res.statusCode ?? '?'}${statusMessage(parseJson(body))}`);
        }
        failures = 0;
        this.connected = true;
        try {
          for await (const event of jsonLines(res)) {
            const e = event as { type?: unknown; object?: NodeObject & { code?: unknown; metadata?: { resourceVersion?: unknown } } };
            if (e.type === 'ERROR') {
              // 410 Gone inside the stream: our version left the server's history.
              if (e.object?.code === 410) version = undefined;
              break;
            }
            const rv = e.object?.metadata?.resourceVersion;
            if (typeof rv === 'string') version = rv;
            const name = e.object?.metadata?.name;
            if (e.type === 'BOOKMARK' || typeof name !== 'string' || !e.object) continue;
            if (e.type === 'DELETED') this.cache.delete(name);
            else this.cache.set(name, e.object);
            this.changed();
          }
        } finally {
          this.connected = false;
        }
      } catch {
        // A broken stream or an unreachable server: resume from the same version once it answers (the
        // server replays what happened since, or says 410 and we list afresh).
        if (signal.aborted || this.closed) return;
        failures++;
        await sleep(Math.min(5_000, 250 * 2 ** Math.min(failures, 4)));
      }
    }
  }

  private failure(what: string, r: Answer): Error {
    const msg = `kubernetes store: ${what}: HTTP ${r.status}${statusMessage(r.body)}`;
    if (r.status === 401 || r.status === 403) {
      // Retryable: an operator can fix a token or RBAC (get, list, watch and patch on nodes) without restarting us.
      return new StoreUnavailableError(`${msg} (flatnetd needs get, list, watch and patch on nodes)`);
    }
    if (r.status === 429 || r.status >= 500) return new StoreUnavailableError(msg);
    return new ApiError(msg);
  }

  /** One request with a JSON answer; a transport failure or the deadline is a StoreUnavailableError. */
  private async call(method: string, path: string, body?: unknown): Promise<Answer> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      const res = await this.open(method, path, body, signal, true);
      const text = await readBody(res);
      return { status: res.statusCode ?? 0, body: parseJson(text) };
    } catch (e) {
      throw new StoreUnavailableError(`kubernetes store: ${method} ${path.split('?')[0] ?? path}: API server unreachable (${(e as Error).message})`, { cause: e });
    }
  }

  private open(method: string, path: string, body: unknown, signal: AbortSignal, bounded: boolean): Promise<IncomingMessage> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.tokenFile !== undefined) headers['authorization'] = `Bearer ${readFileSync(this.tokenFile, 'utf8').trim()}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) {
      headers['content-type'] = 'application/merge-patch+json';
      headers['content-length'] = String(payload.length);
    }
    const opts: RequestOptions = {
      method,
      host: this.url.hostname.replace(/^\[|\]$/g, ''),
      port: this.url.port || (this.url.protocol === 'https:' ? 443 : 80),
      path: `${this.url.pathname.replace(/\/$/, '')}${path}`,
      headers,
      agent: this.agent,
      signal,
      // A watch may be quiet for minutes; only bounded calls get a socket timeout.
      ...(bounded ? { timeout: this.timeoutMs } : {}),
    };
    return new Promise((resolve, reject) => {
      const req = (this.url.protocol === 'https:' ? httpsRequest : httpRequest)(opts, resolve);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('response aborted')));
  });
}

/** The objects of a newline-delimited JSON stream (a watch); a line that is not JSON ends it. */
async function* jsonLines(res: IncomingMessage): AsyncGenerator<unknown> {
  // Decoded as a stream: a character split across two chunks stays one character.
  res.setEncoding('utf8');
  let buf = '';
  for await (const chunk of res as AsyncIterable<string>) {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line === '') continue;
      yield JSON.parse(line) as unknown;
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return text === '' ? undefined : (JSON.parse(text) as unknown);
  } catch {
    return undefined;
  }
}

function statusMessage(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as { message?: unknown }).message : undefined;
  return typeof m === 'string' && m !== '' ? `: ${m.slice(0, 300)}` : '';
}
