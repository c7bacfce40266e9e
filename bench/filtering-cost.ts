// The cost of flatnet's packet filtering on the data path: anti-spoofing (nft `bridge flatnet`, per frame
// from a pod port) and the masquerade/forward table (nft `inet flatnet`, per forwarded packet), measured as
// pod-to-pod TCP throughput (iperf3) and ping latency across two host-gw nodes, in one run, interleaved:
//   full        both tables in place (flatnet's default)
//   no-spoof    the anti-spoofing table removed
//   bare        both removed
//   ct-only     both removed, but an empty nat chain in another table: connection tracking on, as on any
//               Kubernetes node (kube-proxy needs it), so full vs ct-only is flatnet's marginal cost there
// Floor: full loses <= 5% throughput against bare. Not a test: exits 0 unless --strict.
//
//   npm run -s build && node --import tsx bench/filtering-cost.ts [--runs 5] [--duration 5] [--pings 200] [--json]
//
// The agents are stopped once the pods are wired (SIGTERM leaves the datapath in place), so nothing puts
// a removed table back behind the benchmark's back; each variant deletes what it must before its run and
// the saved tables are restored after it (`nft -f` of what `nft list table` printed).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { inNetns, run, runOk } from '../src/linux/run.ts';
import { type NodeNs, Topology, median, quantile, sleep, table, withTopologies } from './topology.ts';
import { type Contender, IPERF_PORT, iperf, ping, waitReachable } from './traffic.ts';

type Variant = 'full' | 'no-spoof' | 'bare' | 'ct-only';
// A nat chain, even empty, makes the kernel track every connection in the namespace.
const CT_ONLY = 'table inet fnbench {\n chain post { type nat hook postrouting priority srcnat; policy accept; }\n}\n';
const FLOOR_LOSS = 0.05;

async function saveTable(netns: string, family: string, name: string): Promise<string> {
  return (await runOk(inNetns(netns, ['nft', 'list', 'table', family, name]))).stdout;
}

async function applyVariant(nodes: readonly NodeNs[], v: Variant, saved: Map<string, { spoof: string; masq: string }>, dir: string): Promise<void> {
  for (const n of nodes) {
    const s = saved.get(n.netns)!;
    // Put everything back first, then take away what this variant must not have.
    await run(inNetns(n.netns, ['nft', 'delete', 'table', 'bridge', 'flatnet']));
    await run(inNetns(n.netns, ['nft', 'delete', 'table', 'inet', 'flatnet']));
    await run(inNetns(n.netns, ['nft', 'delete', 'table', 'inet', 'fnbench']));
    const file = join(dir, `${n.name}.nft`);
    const text = v === 'ct-only' ? CT_ONLY : (v === 'full' ? s.spoof : '') + (v === 'full' || v === 'no-spoof' ? s.masq : '');
    writeFileSync(file, text, { mode: 0o600 });
    await runOk(inNetns(n.netns, ['nft', '-f', file]));
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      duration: { type: 'string', default: '5' },
      pings: { type: 'string', default: '200' },
      json: { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
    },
  });
  const runs = Number(values.runs);
  const duration = Number(values.duration);
  const pings = Number(values.pings);
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const topo = new Topology('fc');
  const scratch = mkdtempSync(join(tmpdir(), 'flatnet-bench-fc-'));
  const variants: Variant[] = ['full', 'no-spoof', 'ct-only', 'bare'];
  const gbps = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  const rtts = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  try {
    await withTopologies([topo], async () => {
      await topo.createFabric();
      const n1 = await topo.addNode(1);
      const n2 = await topo.addNode(2);
      const spec = { backend: 'host-gw', store: { kind: 'embedded', dir: join(topo.tmp, 'store') }, clusterCIDR: '10.244.0.0/16' } as const;
      topo.startAgent(n1, spec);
      topo.startAgent(n2, spec);
      for (const n of [n1, n2]) await topo.waitReady(n);
      const p1 = await topo.addPod(n1, 1);
      const p2 = await topo.addPod(n2, 1);
      const c: Contender = { id: 'pod-pod', from: p1.netns, to: p2.ip, serverNs: p2.netns };
      await waitReachable(c.from, c.to);
      await topo.stopAgent(n1);
      await topo.stopAgent(n2);
      const saved = new Map<string, { spoof: string; masq: string }>();
      for (const n of [n1, n2]) saved.set(n.netns, { spoof: await saveTable(n.netns, 'bridge', 'flatnet'), masq: await saveTable(n.netns, 'inet', 'flatnet') });
      topo.spawnIn(c.serverNs, ['iperf3', '-s', '-p', String(IPERF_PORT)], join(topo.tmp, 'iperf3.log'));
      await sleep(500);
      await iperf(c, 1);
      for (let r = 0; r < runs; r++) {
        // Rotate the order every round so drift in the machine's load hits every variant alike.
        for (const v of variants.map((_, i) => variants[(i + r) % variants.length]!)) {
          await applyVariant([n1, n2], v, saved, scratch);
          gbps.get(v)!.push((await iperf(c, duration)).gbps);
          rtts.get(v)!.push(...(await ping(c, pings)).rtts);
          log(`round ${r + 1}/${runs} ${v}: ${gbps.get(v)!.at(-1)!.toFixed(2)} Gbit/s`);
        }
      }
      await applyVariant([n1, n2], 'full', saved, scratch);
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const med = (v: Variant) => median(gbps.get(v)!);
  const loss = 1 - med('full') / med('bare');
  const rows = variants.map((v) => [v, med(v).toFixed(2), `${((med(v) / med('bare')) * 100).toFixed(1)}%`, quantile(rtts.get(v)!, 0.5).toFixed(3), quantile(rtts.get(v)!, 0.99).toFixed(3)]);
  const marginal = 1 - med('full') / med('ct-only');
  const pass = loss <= FLOOR_LOSS;
  const report = { runs, duration, variants: Object.fromEntries(variants.map((v) => [v, { gbps: gbps.get(v), medianGbps: med(v), rttP50: quantile(rtts.get(v)!, 0.5), rttP99: quantile(rtts.get(v)!, 0.99) }])), throughputLoss: loss, marginalLossOverConntrack: marginal, pass };
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    process.stdout.write(table(['variant', 'Gbit/s (median)', 'vs bare', 'ping p50 ms', 'ping p99 ms'], rows) + '\n');
    process.stdout.write(`${pass ? 'PASS' : 'FAIL'}  throughput loss of full filtering vs none: ${(loss * 100).toFixed(1)}% (floor <= ${FLOOR_LOSS * 100}%)\n`);
    process.stdout.write(`      marginal loss over connection tracking alone (a node with kube-proxy): ${(marginal * 100).toFixed(1)}%\n`);
  }
  return values.strict && !pass ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`filtering-cost: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
