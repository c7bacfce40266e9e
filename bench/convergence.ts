// Convergence and scale benchmark: how fast a new node's lease becomes a route on every real node, how long a
// full reconcile of ~5,000 peers takes, and what the agent costs in memory and nftables rules at that size.
// Not a test: it prints numbers, checks them against the project's floors and exits 0 unless --strict.
//
//   npm run -s build && node --import tsx bench/convergence.ts [--sim 1000] [--new 100] [--total 5000] [--json] [--json-file F] [--strict]
//
// Layout (bench/topology.ts, namespaces fnb-cv<rand>-*): a fabric bridge (172.29.0.1/16) with etcd listening on
// the fabric address inside the fabric namespace, three node namespaces (172.29.0.11-13) each running a real
// dist/bin/flatnetd (--store etcd, --backend host-gw, --cluster-cidr 10.128.0.0/9 so that >5,000 /24s fit).
// The bench process stays in the root namespace; everything that talks to etcd runs in a "store worker" (this
// file re-executed with --store-worker inside the fabric namespace) driven over JSON lines on stdin/stdout.
//
// Simulated peers. They are leases of nodes that do not exist: underlay addresses 172.29.10.1 .. 172.29.30.250
// that no namespace holds (host-gw routes via an on-link gateway that never answers are fine for counting; no
// traffic is sent to them), pod subnets from 10.144.0.0 up. They hold a long etcd TTL (2 h) instead of
// renewing: 5,000 renewal loops would load the 2 shared cores and measure the bench, not the agent. The bulk
// peers are written as the exact records EtcdStore writes (lease key bound to an etcd lease + subnet claim
// key), 60 nodes per transaction (etcd's default limit is 128 operations per transaction), because
// EtcdStore.acquire reads the whole prefix on every call (O(n) per acquire, O(n^2) to seed thousands). The
// measured new leases go through EtcdStore.acquire itself, the path a real node takes.
//
// How "route appeared" is observed. One `ip monitor route` per node namespace runs for the whole benchmark; the
// bench timestamps each line as it arrives (iproute2 flushes after every message). This is event-driven, so the
// timestamp is within a scheduler tick of the kernel change, and it costs nothing while idle. Polling
// `ip -j route show proto 241` instead would quantise the result to the poll period, and each poll of a
// 5,000-route table spawns a process and parses ~1 MB of JSON on the same 2 cores the agents need.
// Convergence of one lease = (first time its subnet's proto-241 route is seen on the slowest of the 3 nodes)
// - (the moment EtcdStore.acquire resolved, i.e. after the etcd transaction committed), on one wall clock.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { inNetns, runOk } from '../src/linux/run.ts';
import {
  type NodeNs,
  ROOT,
  Topology,
  countNftRules,
  httpUnix,
  memoryOf,
  nowMs,
  parseMetrics,
  quantile,
  sleep,
  table,
  tail,
  withTopologies,
} from './topology.ts';

const SELF = fileURLToPath(import.meta.url);
const CLUSTER_CIDR = '10.128.0.0/9';
const NODE_PREFIX = 24;
const ETCD_PORT = 2379;
const SIM_TTL_S = 7200;
/** Simulated peer i gets subnet index SIM_BASE + i (10.144.0.0/24 for i = 0). */
const SIM_BASE = 4096;
const TXN_NODES = 60;
const EMPTY: Map<string, number> = new Map();

const FLOOR_CONVERGENCE_P99_S = 1;
const FLOOR_RESYNC_S = 5;
const FLOOR_RSS_MB = 150;

function simSubnet(i: number): string {
  const s = SIM_BASE + i;
  return `10.${128 + (s >> 8)}.${s & 255}.0/${NODE_PREFIX}`;
}
function simUnderlay(i: number): string {
  return `172.29.${10 + Math.floor(i / 250)}.${1 + (i % 250)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Store worker (runs inside the fabric namespace).

type WorkerRequest =
  | { readonly seq: number; readonly op: 'seed'; readonly from: number; readonly count: number }
  | { readonly seq: number; readonly op: 'acquire'; readonly node: string; readonly underlay: string }
  | { readonly seq: number; readonly op: 'profile'; readonly self: string; readonly netns: string; readonly uplinkCIDR: string };
type WorkerReply = { readonly seq: number; readonly error?: string; readonly [k: string]: unknown };

async function storeWorker(endpoint: string): Promise<void> {
  const out = (o: object): void => {
    process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  // Wait for etcd to answer on the fabric address.
  const t0 = Date.now();
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(500) });
      if (((await res.json()) as { health?: string }).health === 'true') break;
    } catch {
      /* not yet */
    }
    if (Date.now() - t0 > 20_000) throw new Error(`etcd at ${endpoint} not healthy after 20 s`);
    await sleep(50);
  }
  const { Etcd3 } = await import('etcd3');
  const { EtcdStore } = await import('../src/store/etcd.ts');
  const { rejectConflicts } = await import('../src/store/subnets.ts');
  const { desiredHostGw } = await import('../src/agent/backends/hostgw.ts');
  const { listMainRoutes } = await import('../src/linux/datapath-state.ts');
  const { planSync } = await import('../src/agent/reconcile.ts');
  const network = { clusterCIDRs: [CLUSTER_CIDR], nodePrefixLength: { 4: NODE_PREFIX } } as const;
  const client = new Etcd3({ hosts: [endpoint] });
  const store = new EtcdStore({ endpoints: [endpoint], network });
  const prefix = store.prefix;
  let simLease: string | undefined;
  out({ seq: 0, ready: true });

  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const req = JSON.parse(line) as WorkerRequest;
    try {
      if (req.op === 'seed') {
        simLease ??= (await client.leaseClient.leaseGrant({ TTL: SIM_TTL_S, ID: 0 })).ID;
        const tStart = nowMs();
        for (let b = req.from; b < req.from + req.count; b += TXN_NODES) {
          const ops = [];
          const now = Date.now();
          for (let i = b; i < Math.min(req.from + req.count, b + TXN_NODES); i++) {
            const node = `sim-${i}`;
            const subnet = simSubnet(i);
            const lease = { node, podCIDRs: [subnet], expiresAt: now + SIM_TTL_S * 1000, underlayIPs: [simUnderlay(i)], backend: 'host-gw' };
            ops.push({
              request_put: {
                key: Buffer.from(`${prefix}subnets/${subnet.replace('/', '_')}`),
                value: Buffer.from(JSON.stringify({ node, heldUntil: lease.expiresAt, since: now })),
              },
            });
            ops.push({ request_put: { key: Buffer.from(`${prefix}leases/${node}`), value: Buffer.from(JSON.stringify(lease)), lease: simLease } });
          }
          await client.kv.txn({ compare: [], success: ops, failure: [] });
        }
        out({ seq: req.seq, tStart, tDone: nowMs() });
      } else if (req.op === 'profile') {
        // The agent's reconcile, piece by piece, with the agent's own modules (same code as the bundle). The
        // store reads incrementally: the first list() catches up with everything written since the last
        // profile (at the first profile: reads it all), the second is what a resync pays when nothing changed.
        // The parsed facts of unchanged leases are kept between calls, as in the agent.
        const t = [performance.now()];
        const mark = (): number => {
          t.push(performance.now());
          return (t[t.length - 1] ?? 0) - (t[t.length - 2] ?? 0);
        };
        await store.list();
        const catchUpMs = mark();
        const all = await store.list();
        const listMs = mark();
        rejectConflicts(all);
        const rejectConflictsMs = mark();
        const self = all.find((l) => l.node === req.self);
        if (!self) throw new Error(`no lease for ${req.self}`);
        const peers = all.filter((l) => l.node !== req.self);
        const desired = desiredHostGw(self, peers, { clusterCIDRs: [CLUSTER_CIDR], uplink: 'eth0', uplinkPrefixes: [req.uplinkCIDR] });
        const desiredMs = mark();
        const actual = await listMainRoutes({ netns: req.netns });
        const readRoutesMs = mark();
        const plan = planSync(desired, { routes: actual, neighbours: [], fdb: [] });
        const planMs = mark();
        out({ seq: req.seq, leases: all.length, routes: actual.length, steps: plan.steps.length, catchUpMs, listMs, rejectConflictsMs, desiredMs, readRoutesMs, planMs });
      } else {
        const tCall = nowMs();
        const lease = await store.acquire({
          node: req.node,
          network,
          ttlMs: SIM_TTL_S * 1000,
          underlayIPs: [req.underlay],
          backend: 'host-gw',
        });
        out({ seq: req.seq, tCall, tDone: nowMs(), podCIDR: lease.podCIDRs[0] });
      }
    } catch (e) {
      out({ seq: req.seq, error: e instanceof Error ? e.message : String(e) });
    }
  }
  await store.close();
  client.close();
}

class WorkerClient {
  private seq = 0;
  private readonly waiting = new Map<number, (r: WorkerReply) => void>();
  readonly ready: Promise<void>;

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    let markReady: () => void = () => undefined;
    this.ready = new Promise((r) => (markReady = r));
    createInterface({ input: child.stdout }).on('line', (line) => {
      let reply: WorkerReply;
      try {
        reply = JSON.parse(line) as WorkerReply;
      } catch {
        return;
      }
      if (reply.seq === 0) return markReady();
      this.waiting.get(reply.seq)?.(reply);
      this.waiting.delete(reply.seq);
    });
  }

  call(req: Record<string, unknown>): Promise<WorkerReply> {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, (r) => (r.error !== undefined ? reject(new Error(`store worker: ${r.error}`)) : resolve(r)));
      this.child.stdin.write(`${JSON.stringify({ ...req, seq })}\n`);
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Route watcher: `ip monitor route` inside one node namespace.

class RouteWatch {
  readonly firstSeen = new Map<string, number>();
  readonly present = new Set<string>();
  private waiters: (() => void)[] = [];
  readonly child: ChildProcessWithoutNullStreams;

  constructor(readonly node: NodeNs) {
    this.child = spawn('ip', ['-n', node.netns, 'monitor', 'route']);
    createInterface({ input: this.child.stdout }).on('line', (line) => this.onLine(line, nowMs()));
  }

  private onLine(line: string, t: number): void {
    if (!/ proto 241\b/.test(line)) return;
    const deleted = line.startsWith('Deleted ');
    const dst = (deleted ? line.slice('Deleted '.length) : line).split(' ')[0] ?? '';
    if (deleted) {
      this.present.delete(dst);
    } else {
      this.present.add(dst);
      if (!this.firstSeen.has(dst)) this.firstSeen.set(dst, t);
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when pred() holds (checked on every route event), or rejects after timeoutMs. */
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.node.name}: timed out after ${timeoutMs} ms waiting for ${what} (have ${this.present.size} routes)`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

async function metricsOf(topo: Topology, node: NodeNs): Promise<Map<string, number>> {
  // Generous timeout: a reconcile of thousands of peers blocks the agent's event loop for seconds.
  return parseMetrics((await httpUnix(topo.socket(node), '/metrics', 60_000)).body);
}

interface Hist {
  count: number;
  sum: number;
  buckets: [number, number][];
}
function reconcileHist(m: Map<string, number>): Hist {
  const buckets: [number, number][] = [];
  for (const [k, v] of m) {
    const b = /^flatnet_reconcile_duration_seconds_bucket\{.*le="([^"]+)".*\}$/.exec(k);
    if (b && b[1] !== undefined) buckets.push([b[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(b[1]), v]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { count: m.get('flatnet_reconcile_duration_seconds_count') ?? 0, sum: m.get('flatnet_reconcile_duration_seconds_sum') ?? 0, buckets };
}
function histDiff(a: Hist, b: Hist): Hist {
  return { count: b.count - a.count, sum: b.sum - a.sum, buckets: b.buckets.map(([le, v], i) => [le, v - (a.buckets[i]?.[1] ?? 0)]) };
}
/** Smallest bucket bound holding every observation ("all reconciles took <= X s"). */
function histMaxBound(h: Hist): number {
  return h.buckets.find(([, v]) => v >= h.count)?.[0] ?? Number.NaN;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      sim: { type: 'string', default: '1000' },
      new: { type: 'string', default: '100' },
      total: { type: 'string', default: '5000' },
      json: { type: 'boolean', default: false },
      'json-file': { type: 'string' },
      strict: { type: 'boolean', default: false },
      'store-worker': { type: 'string' },
    },
  });
  if (values['store-worker'] !== undefined) {
    await storeWorker(values['store-worker']);
    return 0;
  }
  const simCount = Number(values.sim);
  const newCount = Number(values.new);
  const total = Number(values.total);
  const log = (s: string): void => {
    process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  };

  const topo = new Topology('cv');
  const loadBefore = (await runOk(['cat', '/proc/loadavg'])).stdout.trim();
  const report = await withTopologies([topo], async () => {
    log(`building topology ${topo.prefix}* in ${topo.tmp}`);
    await topo.createFabric();
    const nodes: NodeNs[] = [];
    for (let i = 1; i <= 3; i++) nodes.push(await topo.addNode(i));
    const endpoint = `http://${topo.fabricIP}:${ETCD_PORT}`;
    topo.spawnIn(
      topo.fabric,
      [
        'etcd',
        '--name', 'bench',
        '--data-dir', join(topo.tmp, 'etcd'),
        '--listen-client-urls', endpoint,
        '--advertise-client-urls', endpoint,
        '--listen-peer-urls', 'http://127.0.0.1:2380',
        '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
        '--initial-cluster', 'bench=http://127.0.0.1:2380',
        '--heartbeat-interval=10',
        '--election-timeout=100',
        '--log-level=error',
      ],
      join(topo.tmp, 'etcd.log'),
    );
    const workerChild = spawn('ip', ['netns', 'exec', topo.fabric, process.execPath, '--import', 'tsx', SELF, '--store-worker', endpoint], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    topo.track(workerChild);
    let workerErr = '';
    workerChild.stderr.on('data', (b: Buffer) => (workerErr = (workerErr + b.toString()).slice(-2000)));
    const worker = new WorkerClient(workerChild);
    await Promise.race([
      worker.ready,
      new Promise((_, rej) => workerChild.once('exit', () => rej(new Error(`store worker exited: ${workerErr}`)))),
    ]);
    log('etcd healthy, store worker ready');

    const watches = nodes.map((n) => new RouteWatch(n));
    for (const w of watches) topo.track(w.child);
    await sleep(300); // let the monitors subscribe
    const spec = { backend: 'host-gw', store: { kind: 'etcd', endpoint }, clusterCIDR: CLUSTER_CIDR, resyncS: 10 } as const;
    for (const n of nodes) topo.startAgent(n, spec);
    for (const n of nodes) log(`agent ${n.name} ready in ${(await topo.waitReady(n)).toFixed(0)} ms`);
    for (const w of watches) await w.until(() => w.present.size >= 2, 30_000, 'routes to the 2 other real nodes');
    const nftRulesSmall = await Promise.all(nodes.map((n) => countNftRules(n.netns)));
    const memSmall = nodes.map((n) => memoryOf(n.agent?.pid ?? 0));
    log(`3 nodes up: nft rules ${nftRulesSmall.join('/')}, RSS ${memSmall.map((m) => m.rssMB.toFixed(1)).join('/')} MB`);

    // Phase 1: 1,000 simulated peers.
    const seed1 = await worker.call({ op: 'seed', from: 0, count: simCount });
    const tSeed1 = seed1.tDone as number;
    for (const w of watches) await w.until(() => w.present.size >= simCount + 2, 120_000, `${simCount + 2} routes`);
    const seed1Converged = Math.max(...watches.map((w) => Math.max(...[...w.firstSeen.values()]))) - tSeed1;
    log(`${simCount} simulated peers written in ${((seed1.tDone as number) - (seed1.tStart as number)).toFixed(0)} ms; on every node ${seed1Converged.toFixed(0)} ms after the last write`);
    await sleep(2000);
    const profile1k = await worker.call({ op: 'profile', self: 'n1', netns: (nodes[0] as NodeNs).netns, uplinkCIDR: `${(nodes[0] as NodeNs).ip}/16` });
    log(`reconcile pieces at ${simCount + 3} leases: ${JSON.stringify(profile1k)}`);

    // Phase 2: new leases one at a time, each until its route is on every node.
    const metricsBefore = await Promise.all(nodes.map((n) => metricsOf(topo, n)));
    const samples: { node: string; podCIDR: string; acquireMs: number; perNodeMs: number[]; worstMs: number }[] = [];
    for (let i = 0; i < newCount; i++) {
      const r = await worker.call({ op: 'acquire', node: `new-${i}`, underlay: `172.29.200.${1 + i}` });
      const cidr = r.podCIDR as string;
      const tDone = r.tDone as number;
      await Promise.all(watches.map((w) => w.until(() => w.firstSeen.has(cidr), 15_000, `route ${cidr}`)));
      const perNode = watches.map((w) => (w.firstSeen.get(cidr) ?? Number.NaN) - tDone);
      samples.push({ node: `new-${i}`, podCIDR: cidr, acquireMs: tDone - (r.tCall as number), perNodeMs: perNode, worstMs: Math.max(...perNode) });
      if ((i + 1) % 10 === 0) log(`new lease ${i + 1}/${newCount}: last worst ${Math.max(...perNode).toFixed(0)} ms`);
      await sleep(150 + Math.random() * 250); // independent samples: let the agents go idle again
    }
    const metricsAfter = await Promise.all(nodes.map((n) => metricsOf(topo, n)));
    const hist1k = nodes.map((_, i) => histDiff(reconcileHist(metricsBefore[i] ?? EMPTY), reconcileHist(metricsAfter[i] ?? EMPTY)));
    const worst = samples.map((s) => s.worstMs);
    const convergence = {
      leases: samples.length,
      peersAtStart: simCount + 2,
      worstNodeMs: { p50: quantile(worst, 0.5), p90: quantile(worst, 0.9), p99: quantile(worst, 0.99), max: Math.max(...worst) },
      perNodeP50Ms: nodes.map((_, k) => quantile(samples.map((s) => s.perNodeMs[k] ?? Number.NaN), 0.5)),
      perNodeP99Ms: nodes.map((_, k) => quantile(samples.map((s) => s.perNodeMs[k] ?? Number.NaN), 0.99)),
      acquireMsP50: quantile(samples.map((s) => s.acquireMs), 0.5),
      reconcileMeanMs: hist1k.map((h) => (h.count > 0 ? (1000 * h.sum) / h.count : Number.NaN)),
      reconcileCount: hist1k.map((h) => h.count),
    };
    log(`convergence p50 ${convergence.worstNodeMs.p50.toFixed(0)} ms, p99 ${convergence.worstNodeMs.p99.toFixed(0)} ms`);

    // Phase 3: grow to `total` simulated peers; all three agents reconcile them in.
    const more = Math.max(0, total - simCount);
    const expected = simCount + more + newCount + 2;
    const mBig0 = await Promise.all(nodes.map((n) => metricsOf(topo, n)));
    const seed2 = await worker.call({ op: 'seed', from: simCount, count: more });
    log(`${more} more simulated peers written in ${((seed2.tDone as number) - (seed2.tStart as number)).toFixed(0)} ms`);
    await Promise.all(watches.map((w) => w.until(() => w.present.size >= expected, 300_000, `${expected} routes`)));
    const tAll = Math.max(...watches.map((w) => Math.max(...[...w.firstSeen.values()])));
    await sleep(3000); // routes go in before the reconcile ends (masquerade, conflist): let it be counted
    const mBig1 = await Promise.all(nodes.map((n) => metricsOf(topo, n)));
    const histGrow = nodes.map((_, i) => histDiff(reconcileHist(mBig0[i] ?? EMPTY), reconcileHist(mBig1[i] ?? EMPTY)));
    const growth = {
      written: more,
      writeMs: (seed2.tDone as number) - (seed2.tStart as number),
      allRoutesAfterLastWriteMs: tAll - (seed2.tDone as number),
      reconciles: histGrow.map((h) => h.count),
      reconcileMeanS: histGrow.map((h) => (h.count > 0 ? h.sum / h.count : Number.NaN)),
      reconcileMaxBucketS: histGrow.map(histMaxBound),
    };
    log(`all ${expected} routes on every node ${growth.allRoutesAfterLastWriteMs.toFixed(0)} ms after the last write`);
    await sleep(9_000); // one periodic resync at full size, for steady-state numbers
    const steady = await Promise.all(nodes.map((n) => metricsOf(topo, n)));
    const profileBig = await worker.call({ op: 'profile', self: 'n1', netns: (nodes[0] as NodeNs).netns, uplinkCIDR: `${(nodes[0] as NodeNs).ip}/16` });
    log(`reconcile pieces at ${expected + 1} leases: ${JSON.stringify(profileBig)}`);
    const steadyHist = nodes.map((_, i) => histDiff(reconcileHist(mBig1[i] ?? EMPTY), reconcileHist(steady[i] ?? EMPTY)));

    // Phase 4: full resync from scratch on n3: stop its agent, flush its routes, start it, time the install.
    const n3 = nodes[2] as NodeNs;
    const w3 = watches[2] as RouteWatch;
    await topo.stopAgent(n3);
    await runOk(inNetns(n3.netns, ['ip', 'route', 'flush', 'proto', '241']));
    // `ip monitor` can lose events when 5,000 deletions arrive at once (netlink socket overrun), so the
    // flush is confirmed by listing, and the watch is told the table is empty.
    for (let i = 0; ; i++) {
      const left = (await runOk(inNetns(n3.netns, ['ip', 'route', 'show', 'proto', '241']))).stdout.trim();
      if (left === '') break;
      if (i > 100) throw new Error(`routes of proto 241 still present on ${n3.name} after flush`);
      await sleep(100);
    }
    w3.present.clear();
    w3.firstSeen.clear();
    const tStart = nowMs();
    topo.startAgent(n3, spec);
    const readyAt = topo.waitReady(n3, 120_000).then(() => nowMs() - tStart);
    let firstReconcileS: number | undefined;
    let firstCount = 0;
    const poll = (async () => {
      while (firstReconcileS === undefined && Date.now() - tStart < 120_000) {
        const m = await metricsOf(topo, n3).catch(() => undefined);
        const h = m && reconcileHist(m);
        if (h && h.count >= 1) {
          firstCount = h.count;
          firstReconcileS = h.count === 1 ? h.sum : h.sum / h.count;
          break;
        }
        await sleep(20);
      }
    })();
    await w3.until(() => w3.present.size >= expected, 120_000, `${expected} routes after restart`);
    const tRoutes = Math.max(...[...w3.firstSeen.values()]);
    const firstRoute = Math.min(...[...w3.firstSeen.values()]);
    const readyMs = await readyAt;
    await poll;
    const restart = {
      routes: w3.present.size,
      startToAllRoutesMs: tRoutes - tStart,
      firstToLastRouteMs: tRoutes - firstRoute,
      startToReadyMs: readyMs,
      firstReconcileS,
      firstReconcileExact: firstCount === 1,
    };
    log(`restart: all routes ${restart.startToAllRoutesMs.toFixed(0)} ms after start; first reconcile ${firstReconcileS?.toFixed(2)} s`);
    await sleep(2000);

    const memBig = nodes.map((n) => memoryOf(n.agent?.pid ?? 0));
    const nftRulesBig = await Promise.all(nodes.map((n) => countNftRules(n.netns)));
    const routeCounts = await Promise.all(
      nodes.map(async (n) => (JSON.parse((await runOk(inNetns(n.netns, ['ip', '-j', 'route', 'show', 'proto', '241']))).stdout) as unknown[]).length),
    );
    const statusErrors = nodes.map((n) => (tail(join(n.dir, 'agent.log'), 10_000_000).match(/"level":"error"/g) ?? []).length);
    return {
      nodes: nodes.map((n) => n.name),
      peersAtEnd: expected - 1,
      convergence,
      seed1: { count: simCount, writeMs: (seed1.tDone as number) - (seed1.tStart as number), allRoutesAfterLastWriteMs: seed1Converged },
      growth,
      steadyResync: { reconciles: steadyHist.map((h) => h.count), meanS: steadyHist.map((h) => (h.count > 0 ? h.sum / h.count : Number.NaN)) },
      restart,
      profile: { small: profile1k, big: profileBig },
      memory: { small: memSmall, big: memBig },
      nftRules: { small: nftRulesSmall, big: nftRulesBig },
      routeCounts,
      agentErrorLines: statusErrors,
      samples,
    };
  });
  const loadAfter = (await runOk(['cat', '/proc/loadavg'])).stdout.trim();

  const resyncS = report.restart.firstReconcileS ?? report.restart.startToAllRoutesMs / 1000;
  const maxRss = Math.max(...report.memory.big.map((m) => m.rssMB));
  const maxHwm = Math.max(...report.memory.big.map((m) => m.hwmMB));
  const floors = [
    { name: 'new lease -> route on every node, p99 <= 1 s', value: report.convergence.worstNodeMs.p99 / 1000, unit: 's', floor: FLOOR_CONVERGENCE_P99_S },
    { name: `full reconcile installing ${report.peersAtEnd} routes <= 5 s`, value: resyncS, unit: 's', floor: FLOOR_RESYNC_S },
    { name: `agent RSS at ${report.peersAtEnd} peers <= 150 MB`, value: maxRss, unit: 'MB', floor: FLOOR_RSS_MB },
    {
      name: 'masquerade rules independent of peer count',
      value: Math.max(...report.nftRules.big) - Math.min(...report.nftRules.small),
      unit: 'rules',
      floor: 0,
      equal: report.nftRules.big.every((x, i) => x === report.nftRules.small[i]),
    },
  ].map((f) => ({ ...f, pass: 'equal' in f ? f.equal === true : f.value <= f.floor }));
  const out = { benchmark: 'convergence', when: new Date().toISOString(), loadavg: { before: loadBefore, after: loadAfter }, ...report, floors };
  if (values['json-file'] !== undefined) writeFileSync(values['json-file'], `${JSON.stringify(out, null, 2)}\n`);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } else {
    const ms = (x: number | undefined): string => (x !== undefined && Number.isFinite(x) ? x.toFixed(0) : '-');
    const s2 = (x: number | undefined): string => (x !== undefined && Number.isFinite(x) ? x.toFixed(2) : '-');
    const c = report.convergence;
    console.log(`\nConvergence: ${c.leases} new leases (EtcdStore.acquire) next to ${c.peersAtStart} leases, 3 real agents (host-gw, etcd)`);
    console.log(
      table(
        ['measure', 'p50', 'p90', 'p99', 'max'],
        [
          ['acquire -> route on slowest node (ms)', ms(c.worstNodeMs.p50), ms(c.worstNodeMs.p90), ms(c.worstNodeMs.p99), ms(c.worstNodeMs.max)],
          ...report.nodes.map((n, k) => [`  on ${n} (ms)`, ms(c.perNodeP50Ms[k]), '', ms(c.perNodeP99Ms[k]), '']),
          ['EtcdStore.acquire itself (ms)', ms(c.acquireMsP50), '', '', ''],
        ],
      ),
    );
    console.log(`reconciles during this phase per node: ${c.reconcileCount.join('/')}, mean ${c.reconcileMeanMs.map(ms).join('/')} ms`);
    console.log(`\nScale: ${report.peersAtEnd} peers per node`);
    console.log(
      table(
        ['measure', ...report.nodes],
        [
          ['routes proto 241 at the end', ...report.routeCounts.map(String)],
          ['reconciles while growing', ...report.growth.reconciles.map(String)],
          ['  mean duration (s)', ...report.growth.reconcileMeanS.map(s2)],
          ['  all <= bucket (s)', ...report.growth.reconcileMaxBucketS.map((b) => (Number.isFinite(b) ? String(b) : '> 5 (top bucket)'))],
          ['steady resync mean (s)', ...report.steadyResync.meanS.map(s2)],
          ['VmRSS at 3 nodes (MB)', ...report.memory.small.map((m) => m.rssMB.toFixed(1))],
          ['VmRSS at end (MB)', ...report.memory.big.map((m) => m.rssMB.toFixed(1))],
          ['VmHWM at end (MB)', ...report.memory.big.map((m) => m.hwmMB.toFixed(1))],
          ['nft rules at 3 nodes', ...report.nftRules.small.map(String)],
          ['nft rules at end', ...report.nftRules.big.map(String)],
          ['error log lines', ...report.agentErrorLines.map(String)],
        ],
      ),
    );
    console.log(
      `growth: ${report.growth.written} leases written in ${ms(report.growth.writeMs)} ms; every route on every node ${ms(report.growth.allRoutesAfterLastWriteMs)} ms after the last write`,
    );
    const r = report.restart;
    console.log(
      `restart of n3 with its routes flushed: first reconcile ${s2(r.firstReconcileS)} s${r.firstReconcileExact ? '' : ' (mean of the first reconciles)'}, all ${r.routes} routes ${ms(r.startToAllRoutesMs)} ms after the process start (first->last route ${ms(r.firstToLastRouteMs)} ms), VmHWM max ${maxHwm.toFixed(1)} MB`,
    );
    const prof = (p: Record<string, unknown>): string[] =>
      ['catchUpMs', 'listMs', 'rejectConflictsMs', 'desiredMs', 'readRoutesMs', 'planMs'].map((k) => ms(p[k] as number));
    console.log(`\nReconcile pieces (agent code run in the store worker, one at a time, n1's view):`);
    console.log(
      table(
        ['leases', 'store.list() catching up ms', 'store.list() unchanged ms', 'rejectConflicts ms', 'desiredHostGw ms', 'route read+parse ms', 'planSync ms'],
        [report.profile.small, report.profile.big].map((p) => [String(p.leases), ...prof(p)]),
      ),
    );
    console.log(`loadavg before: ${loadBefore}; after: ${loadAfter}`);
    console.log(
      `\n${table(
        ['floor', 'measured', 'result'],
        floors.map((f) => [f.name, f.unit === 'rules' ? `${report.nftRules.small.join('/')} -> ${report.nftRules.big.join('/')}` : `${f.value.toFixed(f.unit === 's' ? 3 : 1)} ${f.unit}`, f.pass ? 'PASS' : 'FAIL']),
      )}`,
    );
  }
  return values.strict && floors.some((f) => !f.pass) ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`convergence: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 2;
  },
);
