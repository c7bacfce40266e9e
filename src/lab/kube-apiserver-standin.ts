// A STAND-IN for the Kubernetes API server: there is no kube-apiserver on these machines (docs/agent.md,
// "Stores"). flatnet's KubeStore tests and `flatnet lab up --store kubernetes` run against it. It serves
// only what flatnet and the lab use, the way the real server does it:
//   GET    /api/v1/nodes                list, with limit/continue paging and the list's resourceVersion
//   GET    /api/v1/nodes?watch=1        a watch: newline-delimited {type, object} events after the given
//                                       resourceVersion, or an in-stream ERROR 410 when that version has
//                                       left the history; without a version, ADDED for every node first
//   GET    /api/v1/nodes/NAME           one node, or a 404 Status
//   PATCH  /api/v1/nodes/NAME           JSON merge patch (RFC 7386, application/merge-patch+json only)
//   POST   /api/v1/nodes                register a node (the kubelet's part)
//   DELETE /api/v1/nodes/NAME           remove a node (what deleting a Node object does)
// with bearer-token authentication (401 Status otherwise) and one resourceVersion counter for all objects.
// Given cluster CIDRs, it also plays kube-controller-manager's range allocator (--allocate-node-cidrs):
// a registered node without spec.podCIDRs gets the lowest free subnet of each family. What it does not do:
// other resources, strategic merge or JSON patch, field selectors, RBAC (403).
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { chooseSubnets, isNodeName } from '../store/subnets.ts';
import type { ClusterNetwork } from '../store/types.ts';

interface NodeObj {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: { name: string; uid: string; resourceVersion: string; creationTimestamp: string; annotations?: Record<string, string> };
  spec: { podCIDR?: string; podCIDRs?: string[] };
}

interface Event {
  readonly rv: number;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: NodeObj;
}

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Calls `then` with the request's whole body. */
function onBody(req: IncomingMessage, then: (text: string) => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => then(Buffer.concat(chunks).toString('utf8')));
}

/** spec for these pod CIDRs: podCIDRs, and the older podCIDR as their first (as the real API keeps both). */
function specOf(podCIDRs: readonly string[]): NodeObj['spec'] {
  return podCIDRs[0] !== undefined ? { podCIDR: podCIDRs[0], podCIDRs: [...podCIDRs] } : {};
}

/** One watch event as a line of the stream. */
function eventLine(type: string, object: unknown): string {
  return `${JSON.stringify({ type, object })}\n`;
}

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}

/** RFC 7386: objects merge key by key, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class KubeApiStandin {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<{ res: ServerResponse; timer: NodeJS.Timeout }>();
  private readonly nodes = new Map<string, NodeObj>();
  private history: Event[] = [];
  /** Versions at or below this one are gone from the history (as after etcd compaction). */
  private compactedAt = 0;
  private rv = 100;
  private uid = 0;
  port = 0;
  host = '127.0.0.1';
  private tls: { readonly key: Buffer; readonly cert: Buffer } | undefined;
  /** Requests served, by "METHOD kind" (kind: list, watch, get, patch), for tests that count calls. */
  readonly served = new Map<string, number>();

  /**
   * @param token the bearer token every request must carry
   * @param allocate the cluster network to assign spec.podCIDRs from at registration (omit: the caller sets them)
   */
  constructor(
    private readonly token: string,
    private readonly allocate?: ClusterNetwork,
  ) {}

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /**
   * Listens on `host` (default 127.0.0.1) and `port` (default: a fresh one, or the previous one after
   * stop()), over TLS with `tls` (the real server's only mode; the lab uses plain HTTP on its private fabric).
   */
  async start(host = this.host, port = this.port, tls = this.tls): Promise<string> {
    this.host = host;
    this.port = port;
    this.tls = tls;
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    const server = tls ? createTlsServer({ key: tls.key, cert: tls.cert }, handler) : createServer(handler);
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => resolve());
    });
    const addr = server.address();
    if (typeof addr === 'object' && addr) this.port = addr.port;
    this.server = server;
    return this.url;
  }

  /** Stops answering: closes the listener and every open connection (watches included). Objects are kept. */
  async stop(): Promise<void> {
    this.dropWatches();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }

  /**
   * Registers a node (as the kubelet does), with pod CIDRs if given, else (with an allocator) the lowest
   * free subnet of each family (as kube-controller-manager does). Returns the node.
   */
  addNode(name: string, podCIDRs: readonly string[] = [], createdAt = new Date()): NodeObj {
    if (this.nodes.has(name)) throw new Error(`stand-in: node ${name} already exists`);
    if (podCIDRs.length === 0 && this.allocate) {
      const taken = [...this.nodes.values()].map((n) => ({ node: n.metadata.name, podCIDRs: n.spec.podCIDRs ?? [], heldUntil: Number.MAX_SAFE_INTEGER }));
      podCIDRs = chooseSubnets(name, this.allocate, taken, { now: 0, reuseGraceMs: 0 });
    }
    const obj: NodeObj = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, uid: `standin-${++this.uid}`, resourceVersion: '', creationTimestamp: createdAt.toISOString().replace(/\.\d{3}Z$/, 'Z') },
      spec: specOf(podCIDRs),
    };
    this.commit('ADDED', obj);
    return clone(obj);
  }

  setPodCIDRs(name: string, podCIDRs: readonly string[]): void {
    const obj = this.mustGet(name);
    obj.spec = specOf(podCIDRs);
    this.commit('MODIFIED', obj);
  }

  /** Someone else's write to an annotation (undefined removes it). */
  setAnnotation(name: string, key: string, value: string | undefined): void {
    const obj = this.mustGet(name);
    const a = { ...(obj.metadata.annotations ?? {}) };
    if (value === undefined) delete a[key];
    else a[key] = value;
    obj.metadata.annotations = a;
    this.commit('MODIFIED', obj);
  }

  deleteNode(name: string): void {
    const obj = this.mustGet(name);
    this.nodes.delete(name);
    this.commit('DELETED', obj);
  }

  node(name: string): NodeObj | undefined {
    const n = this.nodes.get(name);
    return n ? clone(n) : undefined;
  }

  /** Ends every open watch stream (as an API server restart or a load balancer does). */
  dropWatches(): void {
    for (const w of this.watchers) {
      clearTimeout(w.timer);
      w.res.destroy();
    }
    this.watchers.clear();
  }

  /** Forgets the history up to now: a watch from an older version gets 410 Gone. */
  compact(): void {
    this.compactedAt = this.rv;
    this.history = [];
  }

  private mustGet(name: string): NodeObj {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`stand-in: no node ${name}`);
    return n;
  }

  private commit(type: Event['type'], obj: NodeObj): void {
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    if (type !== 'DELETED') this.nodes.set(obj.metadata.name, obj);
    const ev: Event = { rv: this.rv, type, object: clone(obj) };
    this.history.push(ev);
    for (const w of this.watchers) w.res.write(eventLine(ev.type, ev.object));
  }

  private count(key: string): void {
    this.served.set(key, (this.served.get(key) ?? 0) + 1);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      req.resume();
      status(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://standin');
    const m = /^\/api\/v1\/nodes(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) {
      req.resume();
      status(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
      return;
    }
    const name = m[1] !== undefined ? decodeURIComponent(m[1]) : undefined;
    if (req.method === 'GET' && name === undefined) {
      req.resume();
      const w = url.searchParams.get('watch');
      if (w === '1' || w === 'true') this.watch(url, res);
      else this.list(url, res);
      return;
    }
    if ((req.method === 'GET' || req.method === 'DELETE') && name !== undefined) {
      req.resume();
      this.count(req.method === 'GET' ? 'GET get' : 'DELETE delete');
      const n = this.nodes.get(name);
      if (!n) return status(res, 404, 'NotFound', `nodes "${name}" not found`);
      if (req.method === 'DELETE') this.deleteNode(name);
      return sendJson(res, 200, n);
    }
    if (req.method === 'POST' && name === undefined) {
      this.count('POST create');
      onBody(req, (text) => {
        let body: { metadata?: { name?: unknown } };
        try {
          body = JSON.parse(text) as typeof body;
        } catch (e) {
          return status(res, 400, 'BadRequest', `error decoding body: ${(e as Error).message}`);
        }
        const n = body.metadata?.name;
        if (!isNodeName(n)) return status(res, 422, 'Invalid', 'metadata.name: must be a DNS-1123 subdomain');
        if (this.nodes.has(n)) return status(res, 409, 'AlreadyExists', `nodes "${n}" already exists`);
        let created: NodeObj;
        try {
          created = this.addNode(n);
        } catch (e) {
          return status(res, 500, 'InternalError', (e as Error).message);
        }
        sendJson(res, 201, created);
      });
      return;
    }
    if (req.method === 'PATCH' && name !== undefined) {
      this.count('PATCH patch');
      onBody(req, (text) => {
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          return status(res, 415, 'UnsupportedMediaType', `the body of the request was in an unknown format: ${req.headers['content-type'] ?? 'none'}`);
        }
        const n = this.nodes.get(name);
        if (!n) return status(res, 404, 'NotFound', `nodes "${name}" not found`);
        let patch: unknown;
        try {
          patch = JSON.parse(text);
        } catch (e) {
          return status(res, 400, 'BadRequest', `error decoding patch: ${(e as Error).message}`);
        }
        const merged = mergePatch(n, patch) as NodeObj;
        merged.metadata = { ...merged.metadata, name: n.metadata.name, uid: n.metadata.uid, creationTimestamp: n.metadata.creationTimestamp };
        const annotations = merged.metadata.annotations ?? {};
        for (const [k, v] of Object.entries(annotations)) {
          if (typeof v !== 'string') return status(res, 400, 'BadRequest', `metadata.annotations.${k}: must be a string`);
        }
        this.commit('MODIFIED', merged);
        sendJson(res, 200, merged);
      });
      return;
    }
    req.resume();
    status(res, 405, 'MethodNotAllowed', `${req.method ?? '?'} is not supported by the stand-in`);
  }

  private list(url: URL, res: ServerResponse): void {
    this.count('GET list');
    const all = [...this.nodes.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    const limit = Number(url.searchParams.get('limit') ?? '0');
    const cont = url.searchParams.get('continue');
    let start = 0;
    let version = String(this.rv);
    if (cont) {
      const [v, off] = Buffer.from(cont, 'base64url').toString().split(':');
      if (Number(v) <= this.compactedAt) return status(res, 410, 'Expired', 'The provided continue parameter is too old');
      start = Number(off);
      version = v ?? version;
    }
    const end = limit > 0 ? Math.min(all.length, start + limit) : all.length;
    const metadata: Record<string, string> = { resourceVersion: version };
    if (end < all.length) metadata['continue'] = Buffer.from(`${version}:${end}`).toString('base64url');
    sendJson(res, 200, { kind: 'NodeList', apiVersion: 'v1', metadata, items: all.slice(start, end) });
  }

  private watch(url: URL, res: ServerResponse): void {
    this.count('GET watch');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders(); // the real server answers at once, before any event
    const from = url.searchParams.get('resourceVersion');
    if (from !== null && from !== '' && from !== '0') {
      if (Number(from) < this.compactedAt) {
        this.count('GET watch 410');
        res.end(eventLine('ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${from} (${this.compactedAt})`, reason: 'Expired', code: 410 }));
        return;
      }
      for (const ev of this.history) if (ev.rv > Number(from)) res.write(eventLine(ev.type, ev.object));
    } else {
      for (const n of this.nodes.values()) res.write(eventLine('ADDED', n));
    }
    const seconds = Number(url.searchParams.get('timeoutSeconds') ?? '1800');
    const entry = { res, timer: setTimeout(() => {
      this.watchers.delete(entry);
      res.end();
    }, seconds * 1000) };
    this.watchers.add(entry);
    res.on('close', () => {
      clearTimeout(entry.timer);
      this.watchers.delete(entry);
    });
  }
}
