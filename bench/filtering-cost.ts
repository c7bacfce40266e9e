// The cost of flatnet's packet filtering on the data path: anti-spoofing (nft `bridge flatnet`, per frame
// from a pod port) and the masquerade/forward table (nft `inet flatnet`, per forwarded packet), measured as
// pod-to-pod TCP throughput (iperf3) and ping latency across two host-gw nodes, in one run, interleaved:
//   full        both tables in place (flatnet's default)
//   no-spoof    the anti-spoofing table removed
//   ct-only     both removed, but connection tracking on (with NAT's hooks), as on any Kubernetes node
//               (kube-proxy needs it), so full vs ct-only is flatnet's marginal cost there
//   bare        both removed
// and, on request (--variants), diagnostics that put back one part of the datapath as it was before the
// one-lookup anti-spoofing rules and the unhooked forward chain (as of commit 37a7471):
//   before      both parts as they were
//   spoof-prev  only the anti-spoofing rules as they were (a MAC lookup, then an address lookup, per frame)
//   fwd-hooked  only the forward chain of `inet flatnet` hooked, as it was
// Floor: full loses <= 5% throughput against bare. Not a test: exits 0 unless --strict.
//
//   npm run -s build && node --import tsx bench/filtering-cost.ts [--rounds 48] [--dwell 1] [--pings 100]
//       [--variants full,no-spoof,ct-only,bare] [--affinity 0,1] [--no-offload] [--json] [--strict]
//
// Why the method is what it is: on the shared 2-vCPU VM this runs on, the throughput of one and the same
// variant moves by 30% within a minute (other guests, other work), more than the effect measured. So:
// - ONE iperf3 stream runs through the whole throughput phase and the variants are switched under it (one
//   nft transaction per node). Filtering costs per packet, so a running TCP stream sees the new cost at
//   once; no connection setup or ramp-up is in any sample. Throughput is the receiving pod's rx_bytes over
//   `--dwell` seconds, read from /proc/<iperf3 server pid>/net/dev (that pid lives in the pod's network
//   namespace), starting a short guard after the switch.
// - A round measures every variant once, a few seconds in all, and the statistic is the MEDIAN OVER
//   ROUNDS OF THE PER-ROUND RATIO to bare: a slow spell slows the variants of its round alike and cancels
//   in the ratio, a round hit in the middle is outvoted. The order within rounds follows a Williams design
//   (every variant directly follows every other equally often); the first round is a warm-up, not
//   recorded. The interval printed is a percentile bootstrap over rounds (95%, seeded: the same numbers
//   always give the same interval), next to the min and max of the per-round ratios. It covers the noise
//   within a run only: medians of separate runs have differed by more (docs/benchmarks.md).
// - --no-offload turns segmentation offload off in both pods, so that each 1500-byte frame is filtered
//   on its own instead of once per 64 KB super-frame: a magnifier for the cost per frame (not the floor).
// - Latency is measured after that, without the stream: `--pings` pings per variant in each of 3 rounds.
//
// The agents are stopped once the pods are wired (SIGTERM leaves the datapath in place), so nothing puts
// a removed table back behind the benchmark's back; each variant replaces all tables in one nft
// transaction per node, from what `nft list table` printed at the start.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { inNetns, runOk } from '../src/linux/run.ts';
import { type NodeNs, Topology, median, quantile, sleep, stopChild, table, tail, williams, withTopologies } from './topology.ts';
import { type Contender, IPERF_PORT, ping, waitReachable } from './traffic.ts';
import { mulberry32 } from '../test/tools/prng.ts';

const VARIANTS = ['full', 'no-spoof', 'ct-only', 'bare', 'before', 'spoof-prev', 'fwd-hooked'] as const;
type Variant = (typeof VARIANTS)[number];
const DEFAULT_VARIANTS: readonly Variant[] = ['full', 'no-spoof', 'ct-only', 'bare'];
// Connection tracking is turned on by a rule using it (here one in a chain nothing jumps to, so it costs
// no packet anything), NOT by a nat chain alone: an empty nat chain registers NAT's hooks but tracks
// nothing (nf_conntrack_count stays 0 on this 6.18 kernel). Both together are what a kube-proxy node has.
const CT_ONLY = 'table inet fnbench {\n chain post { type nat hook postrouting priority srcnat; policy accept; }\n chain track {\n }\n}\nadd rule inet fnbench track ct state new\n';
// Declaring a table before deleting it makes the delete succeed when it is absent.
const CLEAR = ['bridge flatnet', 'inet flatnet', 'inet fnbench'].map((t) => `table ${t}\ndelete table ${t}\n`).join('');
// The anti-spoofing rules before the one-lookup layout, over the same sets. Kept here, not in
// the plugin, so that the gain can be measured again.
const PREV_SPOOF = [
  'flush chain bridge flatnet prerouting',
  'add rule bridge flatnet prerouting iifname != "flv*" accept',
  'add rule bridge flatnet prerouting iifname . ether saddr != @pod_macs counter drop',
  'add rule bridge flatnet prerouting ether type ip iifname . ip saddr . ether saddr != @pods_v4 counter drop',
  'add rule bridge flatnet prerouting ether type arp iifname . arp saddr ip . ether saddr != @pods_v4 counter drop',
  'add rule bridge flatnet prerouting ether type ip6 ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr . ether saddr != @pods_v6 counter drop',
  '',
].join('\n');
const FLOOR_LOSS = 0.05;
// A margin after a switch (sampled in 100 ms windows, the stream showed no transient after one).
const GUARD_MS = 200;
const PING_ROUNDS = 3;

interface Saved {
  readonly spoof: string;
  readonly masq: string;
}

/** The saved `inet flatnet` listing with its forward chain hooked, as it was before. */
function hookForward(masq: string): string {
  const hooked = masq.replace(/chain forward \{\n/, 'chain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n');
  if (hooked === masq) throw new Error('no forward chain in the saved inet flatnet table');
  return hooked;
}

function variantScript(v: Variant, s: Saved): string {
  switch (v) {
    case 'full':
      return s.spoof + s.masq;
    case 'before':
      return s.spoof + hookForward(s.masq) + PREV_SPOOF;
    case 'spoof-prev':
      return s.spoof + s.masq + PREV_SPOOF;
    case 'fwd-hooked':
      return s.spoof + hookForward(s.masq);
    case 'no-spoof':
      return s.masq;
    case 'ct-only':
      return CT_ONLY;
    case 'bare':
      return '';
  }
}

async function applyVariant(nodes: readonly NodeNs[], v: Variant, saved: Map<string, Saved>, dir: string): Promise<void> {
  // One transaction per node: the old tables go and the variant's come in atomically; nodes in parallel.
  await Promise.all(
    nodes.map(async (n) => {
      const file = join(dir, `${n.name}.nft`);
      writeFileSync(file, CLEAR + variantScript(v, saved.get(n.netns)!), { mode: 0o600 });
      await runOk(inNetns(n.netns, ['nft', '-f', file]));
    }),
  );
}

/** Median of xs with a 95% percentile-bootstrap interval (resampling the rounds), plus min and max. */
function medianWithInterval(xs: readonly number[], resamples = 4000, seed = 1): { median: number; lo: number; hi: number; min: number; max: number } {
  const next = mulberry32(seed);
  const medians: number[] = [];
  for (let b = 0; b < resamples; b++) medians.push(median(Array.from(xs, () => xs[Math.floor(next() * xs.length)]!)));
  return { median: median(xs), lo: quantile(medians, 0.025), hi: quantile(medians, 0.975), min: Math.min(...xs), max: Math.max(...xs) };
}

/** Received bytes of `ifname` in the network namespace of process `pid`. */
function rxBytes(pid: number, ifname: string): number {
  const line = readFileSync(`/proc/${pid}/net/dev`, 'utf8')
    .split('\n')
    .find((l) => l.trim().startsWith(`${ifname}:`));
  const n = Number(line?.split(':')[1]?.trim().split(/\s+/)[0]);
  if (!Number.isFinite(n)) throw new Error(`no rx_bytes for ${ifname} in /proc/${pid}/net/dev`);
  return n;
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '48' },
      dwell: { type: 'string', default: '1' },
      pings: { type: 'string', default: '100' },
      variants: { type: 'string', default: DEFAULT_VARIANTS.join(',') },
      affinity: { type: 'string' },
      'no-offload': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
    },
  });
  const rounds = Number(values.rounds);
  const dwell = Number(values.dwell);
  const pings = Number(values.pings);
  const variants = values.variants.split(',') as Variant[];
  for (const v of variants) if (!VARIANTS.includes(v)) throw new Error(`unknown variant "${v}" (known: ${VARIANTS.join(', ')})`);
  if (!variants.includes('bare') || !variants.includes('full')) throw new Error('--variants must include full and bare');
  if (!(rounds >= 1 && dwell > 0 && pings >= 1)) throw new Error('--rounds, --dwell and --pings must be positive');
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  // Its temp dir also holds the nft scripts, so teardown (also on a signal) removes them with it.
  const topo = new Topology('fc');
  // gbps[round][variant]; the warm-up round is not in it.
  const gbps: Map<Variant, number>[] = [];
  const rtts = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  const order = williams(variants.length);
  const load0 = loadavg()[0]!;
  const t0 = Date.now();
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
    if (values['no-offload']) {
      // Without segmentation offload every MTU-sized frame crosses the filters on its own: the cost
      // per frame, which 64 KB TSO super-frames hide, is what is measured then.
      for (const p of [p1, p2]) await runOk(inNetns(p.netns, ['ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off', 'gro', 'off']));
    }
    await topo.stopAgent(n1);
    await topo.stopAgent(n2);
    const saved = new Map<string, Saved>();
    for (const n of [n1, n2]) {
      const list = async (family: string) => (await runOk(inNetns(n.netns, ['nft', 'list', 'table', family, 'flatnet']))).stdout;
      saved.set(n.netns, { spoof: await list('bridge'), masq: await list('inet') });
    }
    const server = topo.spawnIn(c.serverNs, ['iperf3', '-s', '-p', String(IPERF_PORT)], join(topo.tmp, 'iperf3-server.log'));
    await sleep(500);
    // Long enough for every round even with slow switches; stopped (by pid) once the rounds are done.
    const streamS = Math.ceil((rounds + 1) * variants.length * (dwell + 1.5)) + 30;
    const affinity = values.affinity ? ['-A', values.affinity] : [];
    const client = topo.spawnIn(c.from, ['iperf3', '-c', c.to, '-p', String(IPERF_PORT), '-t', String(streamS), '-i', '0', ...affinity], join(topo.tmp, 'iperf3-client.log'));
    await sleep(1000);
    for (let r = 0; r <= rounds; r++) {
      const round = new Map<Variant, number>();
      for (const v of order[r % order.length]!.map((i) => variants[i]!)) {
        await applyVariant([n1, n2], v, saved, topo.tmp);
        await sleep(GUARD_MS);
        if (client.exitCode !== null) throw new Error(`iperf3 client exited early (${client.exitCode}): ${tail(join(topo.tmp, 'iperf3-client.log'))}`);
        const b0 = rxBytes(server.pid!, 'eth0');
        const s0 = performance.now();
        await sleep(dwell * 1000);
        const b1 = rxBytes(server.pid!, 'eth0');
        round.set(v, ((b1 - b0) * 8) / ((performance.now() - s0) / 1000) / 1e9);
      }
      if (r > 0) gbps.push(round);
      const row = variants.map((v) => `${v} ${round.get(v)!.toFixed(2)}`).join(', ');
      log(`${r === 0 ? 'warm-up' : `round ${r}/${rounds}`} (${Math.round((Date.now() - t0) / 1000)} s): ${row} Gbit/s`);
    }
    await stopChild(client);
    for (let r = 0; r < PING_ROUNDS; r++) {
      for (const v of order[r % order.length]!.map((i) => variants[i]!)) {
        await applyVariant([n1, n2], v, saved, topo.tmp);
        rtts.get(v)!.push(...(await ping(c, pings)).rtts);
      }
    }
    await applyVariant([n1, n2], 'full', saved, topo.tmp);
  });
  const series = (v: Variant) => gbps.map((g) => g.get(v)!);
  const ratio = (a: Variant, b: Variant) => medianWithInterval(gbps.map((g) => g.get(a)! / g.get(b)!));
  const vsBare = new Map(variants.map((v) => [v, ratio(v, 'bare')]));
  const full = vsBare.get('full')!;
  const loss = { median: 1 - full.median, lo: 1 - full.hi, hi: 1 - full.lo };
  const pass = loss.median <= FLOOR_LOSS;
  // Each part's share: the ratio of two variants that differ by that part alone.
  const steps: [string, Variant, Variant][] = [
    ['anti-spoofing (full / no-spoof)', 'full', 'no-spoof'],
    ['masquerade table over conntrack (no-spoof / ct-only)', 'no-spoof', 'ct-only'],
    ['connection tracking (ct-only / bare)', 'ct-only', 'bare'],
    ['flatnet over conntrack (full / ct-only)', 'full', 'ct-only'],
    ['now vs before (full / before)', 'full', 'before'],
    ['anti-spoofing layout (full / spoof-prev)', 'full', 'spoof-prev'],
    ['forward chain unhooked (full / fwd-hooked)', 'full', 'fwd-hooked'],
  ];
  const components = steps.filter(([, a, b]) => variants.includes(a) && variants.includes(b)).map(([what, a, b]) => ({ what, ...ratio(a, b) }));
  const report = {
    rounds,
    dwellS: dwell,
    affinity: values.affinity ?? null,
    offload: !values['no-offload'],
    order: order.map((row) => row.map((i) => variants[i])),
    loadavg: { start: load0, end: loadavg()[0]! },
    seconds: Math.round((Date.now() - t0) / 1000),
    variants: Object.fromEntries(variants.map((v) => [v, { gbps: series(v), medianGbps: median(series(v)), vsBare: vsBare.get(v), rttP50: quantile(rtts.get(v)!, 0.5), rttP99: quantile(rtts.get(v)!, 0.99) }])),
    components,
    throughputLoss: loss,
    pass,
    // Whether the whole interval is on one side of the floor.
    conclusive: loss.hi <= FLOOR_LOSS || loss.lo > FLOOR_LOSS,
  };
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    const iv = (x: { median: number; lo: number; hi: number; min: number; max: number }) => [pct(x.median), `${pct(x.lo)}–${pct(x.hi)}`, `${pct(x.min)}–${pct(x.max)}`];
    const rows = variants.map((v) => [v, median(series(v)).toFixed(2), ...iv(vsBare.get(v)!), quantile(rtts.get(v)!, 0.5).toFixed(3), quantile(rtts.get(v)!, 0.99).toFixed(3)]);
    process.stdout.write(table(['variant', 'Gbit/s (median)', 'vs bare (median of rounds)', '95% interval', 'min–max', 'ping p50 ms', 'ping p99 ms'], rows) + '\n\n');
    process.stdout.write(table(['step', 'ratio (median of rounds)', '95% interval', 'min–max'], components.map((x) => [x.what, ...iv(x)])) + '\n\n');
    const where = report.conclusive ? '' : ' (the interval straddles the floor: not conclusive)';
    process.stdout.write(`${pass ? 'PASS' : 'FAIL'}  throughput loss of full filtering vs none: ${pct(loss.median)}, 95% interval ${pct(loss.lo)}–${pct(loss.hi)} (floor <= ${FLOOR_LOSS * 100}%)${where}\n`);
    process.stdout.write(`      ${rounds} rounds, ${dwell} s per variant, load average ${load0.toFixed(1)} -> ${report.loadavg.end.toFixed(1)}, ${report.seconds} s\n`);
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
