// CNI plugin latency benchmark: flatnet-cni (dist/cni/flatnet, built-in IPAM) against Debian's reference
// bridge + host-local, with bare `node -e 0` starts as the floor every Node plugin pays. Not a test: it
// prints numbers, checks them against the project's floors, and exits 0 unless --strict.
// Two flatnet contenders: standalone (no agent in its node namespace: every call starts Node, the case the
// floors are written for) and served (flatnetd's plugin-call server in its node namespace, which runs the
// same bundle in a warm process: src/agent/cni-server.ts); the served one is reported beside the floors.
//
//   npm run -s build && node --import tsx bench/cni-latency.ts [--cycles 50] [--runs 3] [--json] [--strict]
//
// Layout. Each contender gets its own "node" namespace (fnb-<id>-fnode / fnb-<id>-rnode) so the two bridges,
// address pools and ip_forward settings never touch each other, and the root namespace is never changed.
// Pods are namespaces created before anything is timed. A worker process runs inside each node namespace
// (started once through `ip netns exec`, re-executing this file with --worker) and spawns plugins directly:
// the timed region is exactly "spawn the plugin, feed stdin, wait for exit" as a runtime does it, with no
// `ip netns exec`/nsenter inside it. The parent only sends jobs and interleaves the contenders cycle by cycle
// (ABAB, then BABA), because the machine is shared and noise must hit every contender alike.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run, runOk } from '../src/linux/run.ts';
import { williams } from './topology.ts';
import { ServerHost, calls } from '../test/tools/cni-agent.ts';
import { type Entry, enterNs } from '../test/tools/netns.ts';

const ROOT = resolve(import.meta.dirname, '..');
const SELF = fileURLToPath(import.meta.url);
const FLATNET = join(ROOT, 'dist/cni/flatnet');
const REF_DIR = '/usr/lib/cni';
const GNU_TIME = '/usr/bin/time';
const WARMUP_CYCLES = 3;
// Orders of the ADD phase's five steps (0 flatnet ADD, 1 reference ADD, 2 and 3 the node -e 0 baselines with
// and without NODE_EXTRA_CA_CERTS, 4 flatnet ADD served by the agent): a Williams design, so over 10 cycles
// each step is in every position equally often and directly follows every other step equally often.
const ADD_PHASE_ORDERS = williams(5);
const RSS_SAMPLES = 5;

// The project's floors (docs/benchmarks.md).
const FLOOR_OWN_WORK_MS = 10;
const FLOOR_ADD_RATIO = 3;
const FLOOR_DEL_RATIO = 2;
const FLOOR_RSS_MB = 60; // decimal megabytes (the stricter reading of "60 MB")

// ---------------------------------------------------------------------------------------------------------
// Worker: lives inside one node namespace, runs jobs it is sent on stdin (one JSON line per batch), answers
// one JSON line per batch on stdout. A batch's jobs start together (concurrency) and the batch's wall time
// runs from before the first spawn to the last exit.

interface Job {
  readonly argv: readonly string[];
  readonly env: Record<string, string>;
  readonly input: string;
}
interface JobResult {
  readonly ms: number;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}
interface BatchRequest {
  readonly seq: number;
  readonly jobs: readonly Job[];
}
interface BatchReply {
  readonly seq: number;
  readonly wallMs: number;
  readonly results: readonly JobResult[];
}

async function runJob(j: Job): Promise<JobResult> {
  const t0 = performance.now();
  try {
    // Generous: on a busy machine 100 concurrent Node plugins take minutes; a runtime would wait as well.
    const r = await run(j.argv, { input: j.input, env: j.env, timeoutMs: 600_000 });
    return { ms: performance.now() - t0, code: r.code, stdout: r.stdout, stderr: r.stderr.slice(0, 2000) };
  } catch (e) {
    // spawn itself failed (ENOENT, ETXTBSY...): report it as a failed job instead of killing the worker.
    return { ms: performance.now() - t0, code: -1, stdout: '', stderr: `spawn ${j.argv[0] ?? ''}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

async function workerMain(): Promise<void> {
  // Ctrl-C reaches the whole process group: the parent cleans up, the worker just stops when its stdin closes.
  process.on('SIGINT', () => undefined);
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    const req = JSON.parse(line) as BatchRequest;
    const t0 = performance.now();
    const results = await Promise.all(req.jobs.map(runJob));
    const reply: BatchReply = { seq: req.seq, wallMs: performance.now() - t0, results };
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
}

/** The parent's handle on a worker. Uses spawn directly (not run.ts): it is a long-lived co-process. */
class Worker {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting = new Map<number, (r: BatchReply | Error) => void>();
  private seq = 0;
  private exited = false;

  constructor(
    readonly netns: string,
    enter: Entry = 'ip-netns-exec',
  ) {
    const [cmd, ...args] = enterNs(netns, [process.execPath, ...process.execArgv, SELF, '--worker'], enter);
    this.child = spawn(cmd!, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout }).on('line', (l) => {
      const reply = JSON.parse(l) as BatchReply;
      this.waiting.get(reply.seq)?.(reply);
      this.waiting.delete(reply.seq);
    });
    this.child.stderr.on('data', (b: Buffer) => process.stderr.write(`[worker ${netns}] ${b.toString()}`));
    this.child.on('exit', (code) => {
      this.exited = true;
      for (const [, waiter] of this.waiting) waiter(new Error(`worker in ${netns} exited with ${code}`));
      this.waiting.clear();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  batch(jobs: readonly Job[]): Promise<BatchReply> {
    if (this.exited) return Promise.reject(new Error(`worker in ${this.netns} has exited`));
    const seq = ++this.seq;
    return new Promise((resolveReply, reject) => {
      this.waiting.set(seq, (r) => (r instanceof Error ? reject(r) : resolveReply(r)));
      this.child.stdin.write(JSON.stringify({ seq, jobs } satisfies BatchRequest) + '\n');
    });
  }

  async one(job: Job): Promise<JobResult> {
    const r = (await this.batch([job])).results[0];
    if (!r) throw new Error('worker returned no result');
    return r;
  }

  stop(): void {
    this.child.stdin.end();
    if (!this.exited && this.child.pid !== undefined) {
      try {
        this.child.kill('SIGTERM');
      } catch {
        /* already gone */
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Statistics

/** Nearest-rank percentile (p in 0..1) of unsorted samples. */
function percentile(samples: readonly number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.max(0, Math.ceil(p * s.length) - 1)]!;
}
/** VmRSS and VmHWM of a process, KiB (0 when it is gone). */
function procMemKiB(pid: number | undefined): { rss: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid ?? 0}/status`, 'utf8');
    const field = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rss: field('VmRSS'), hwm: field('VmHWM') };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** xs rotated left by k: each contender leads a phase in turn. */
function rotate<T>(xs: readonly T[], k: number): T[] {
  const n = k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// ---------------------------------------------------------------------------------------------------------
// Contenders

interface Plugin {
  readonly key: 'flatnet' | 'reference' | 'served';
  readonly label: string;
  readonly exe: string;
  readonly cniPath: string;
  readonly config: Record<string, unknown>;
  readonly dataDir: string;
  readonly network: string;
  readonly worker: Worker;
  readonly seqPod: string;
  readonly concPods: readonly string[];
}

interface Attachment {
  readonly containerID: string;
  readonly pod: string;
  readonly podName: string;
  readonly podUID: string;
  result?: Record<string, unknown>;
}

function newAttachment(pod: string, i: number): Attachment {
  return { containerID: randomBytes(32).toString('hex'), pod, podName: `bench-${i}`, podUID: randomUUID() };
}

/** The environment a runtime gives a plugin: its whole own environment (NODE_EXTRA_CA_CERTS included) + CNI_*. */
function pluginEnv(p: Plugin, command: 'ADD' | 'DEL', a: Attachment): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return {
    ...env,
    CNI_COMMAND: command,
    CNI_CONTAINERID: a.containerID,
    CNI_NETNS: `/run/netns/${a.pod}`,
    CNI_IFNAME: 'eth0',
    // What the kubelet's runtimes send.
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${a.podName};K8S_POD_INFRA_CONTAINER_ID=${a.containerID};K8S_POD_UID=${a.podUID}`,
    CNI_PATH: p.cniPath,
  };
}

function pluginJob(p: Plugin, command: 'ADD' | 'DEL', a: Attachment, wrap: readonly string[] = []): Job {
  // DEL carries the cached ADD result as prevResult, as libcni does for cniVersion >= 0.4.0.
  const config = command === 'DEL' && a.result ? { ...p.config, prevResult: a.result } : p.config;
  return { argv: [...wrap, p.exe], env: pluginEnv(p, command, a), input: JSON.stringify(config) };
}

function baseEnv(withCA: boolean): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && (withCA || k !== 'NODE_EXTRA_CA_CERTS')) env[k] = v;
  return env;
}

function nodeJob(withCA: boolean, wrap: readonly string[] = []): Job {
  // `node` from PATH, as the plugin's `#!/usr/bin/env ... node` shebang finds it.
  return { argv: [...wrap, 'node', '-e', '0'], env: baseEnv(withCA), input: '' };
}

function describeFailure(what: string, r: JobResult): Error {
  return new Error(`${what} failed (exit ${r.code}): ${(r.stdout + ' ' + r.stderr).trim().slice(0, 600)}`);
}

function firstIP(result: Record<string, unknown> | undefined): string | undefined {
  const ips = result?.['ips'];
  if (!Array.isArray(ips)) return undefined;
  const first = ips[0] as { address?: unknown } | undefined;
  return typeof first?.address === 'string' ? first.address.split('/')[0] : undefined;
}

async function add(p: Plugin, a: Attachment): Promise<number> {
  const r = await p.worker.one(pluginJob(p, 'ADD', a));
  if (r.code !== 0) throw describeFailure(`${p.label} ADD`, r);
  a.result = JSON.parse(r.stdout) as Record<string, unknown>;
  if (!firstIP(a.result)) throw new Error(`${p.label} ADD returned no address: ${r.stdout.slice(0, 300)}`);
  return r.ms;
}

async function del(p: Plugin, a: Attachment): Promise<number> {
  const r = await p.worker.one(pluginJob(p, 'DEL', a));
  if (r.code !== 0) throw describeFailure(`${p.label} DEL`, r);
  return r.ms;
}

/** Reservation files left in the IPAM directory (both IPAMs use host-local's layout). */
function reservations(p: Plugin): string[] {
  const dir = join(p.dataDir, p.network);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip') && !f.startsWith('.'));
}

interface Concurrent {
  addWallMs: number;
  delWallMs: number;
  distinct: number;
  failures: number;
  leftover: number;
}

async function concurrentAdd(p: Plugin, atts: Attachment[], out: Concurrent): Promise<void> {
  const reply = await p.worker.batch(atts.map((a) => pluginJob(p, 'ADD', a)));
  out.addWallMs = reply.wallMs;
  const ips = new Set<string>();
  reply.results.forEach((r, i) => {
    if (r.code !== 0) {
      out.failures++;
      process.stderr.write(`${describeFailure(`${p.label} concurrent ADD ${i}`, r).message}\n`);
      return;
    }
    const a = atts[i]!;
    a.result = JSON.parse(r.stdout) as Record<string, unknown>;
    const ip = firstIP(a.result);
    if (ip) ips.add(ip);
  });
  out.distinct = ips.size;
}

async function concurrentDel(p: Plugin, atts: Attachment[], out: Concurrent): Promise<void> {
  const reply = await p.worker.batch(atts.map((a) => pluginJob(p, 'DEL', a)));
  out.delWallMs = reply.wallMs;
  reply.results.forEach((r, i) => {
    if (r.code !== 0) {
      out.failures++;
      process.stderr.write(`${describeFailure(`${p.label} concurrent DEL ${i}`, r).message}\n`);
    }
  });
  out.leftover = reservations(p).length;
}

/** Peak RSS in KiB of one process, from GNU time's %M (ru_maxrss from wait4: the plugin process and, as a max, its children). */
async function peakRss(w: Worker, job: Job, file: string): Promise<{ kib: number; stdout: string }> {
  rmSync(file, { force: true });
  const r = await w.one(job);
  if (r.code !== 0) throw describeFailure(`${job.argv.join(' ')}`, r);
  const kib = Number(readFileSync(file, 'utf8').trim().split('\n').at(-1));
  if (!Number.isFinite(kib)) throw new Error(`cannot read GNU time output in ${file}`);
  return { kib, stdout: r.stdout };
}

// ---------------------------------------------------------------------------------------------------------
// Parent

interface Cleanup {
  namespaces: string[];
  dirs: string[];
  workers: Worker[];
  servers: ServerHost[];
  done: boolean;
}

async function cleanup(c: Cleanup): Promise<void> {
  if (c.done) return;
  c.done = true;
  for (const w of c.workers) w.stop();
  for (const h of c.servers) await h.stop();
  // Anything still running inside our namespaces (plugins cut off by Ctrl-C, workers) is ours: end it by pid.
  const killIn = async (ns: string): Promise<void> => {
    const pids = await run(['ip', 'netns', 'pids', ns]);
    for (const p of pids.stdout.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  for (let i = 0; i < c.namespaces.length; i += 16) await Promise.all(c.namespaces.slice(i, i + 16).map(killIn));
  // Deleting a namespace deletes its veths and bridges with it; one ip process for all of them.
  if (c.namespaces.length) await run(['ip', '-force', '-batch', '-'], { input: c.namespaces.map((n) => `netns del ${n}\n`).join('') });
  for (const d of c.dirs) rmSync(d, { recursive: true, force: true });
}

interface Stats {
  p50: number;
  p90: number;
}
interface Report {
  machine: { cycles: number; runs: number; concurrency: number; loadavg: string; note: string };
  perRun: Record<string, { add: Stats; del: Stats }[]>;
  latency: Record<string, { addP50: number; addP90: number; delP50: number; delP90: number }>;
  baseline: Record<string, { p50: number; p90: number }>;
  concurrent: Record<string, { addWallMs: number; delWallMs: number; distinctMin: number; failures: number; leftoverMax: number }>;
  rssMB: Record<string, number>;
  /** The serving process (flatnetd's server, run by test/tools/cni-server-host.ts through tsx), MB. */
  agentMemMB: { rssBefore: number; rssAfter: number; peak: number };
  /** The longest the serving process's event loop was held (ms), max over runs: one call at a time, and during the concurrent ADDs and DELs. */
  agentLoopDelayMaxMs: { sequential: number; concurrentAdd: number; concurrentDel: number };
  derived: { ownWorkMs: number; ownWorkBaseline: string; ownWorkVsCaEnvMs: number; ownWorkPairedMs: number; addRatio: number; delRatio: number; servedAddRatio: number; servedDelRatio: number };
  floors: { name: string; value: number; limit: number; pass: boolean }[];
  checks: { name: string; pass: boolean }[];
}

function statsOf(xs: readonly number[]): Stats {
  return { p50: percentile(xs, 0.5), p90: percentile(xs, 0.9) };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cycles: { type: 'string', default: '50' },
      runs: { type: 'string', default: '3' },
      concurrency: { type: 'string', default: '100' },
      json: { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
      worker: { type: 'boolean', default: false },
    },
  });
  if (values.worker) {
    try {
      await workerMain();
      return 0;
    } finally {
      // Nothing may keep a worker alive once its loop ends, or the parent would wait for it forever.
      process.stdin.destroy();
    }
  }
  const cycles = Number(values.cycles);
  const runs = Number(values.runs);
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(cycles) || cycles < 1 || !Number.isInteger(runs) || runs < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write('usage: cni-latency.ts [--cycles N>=1] [--runs N>=1] [--concurrency N>=1] [--json] [--strict]\n');
    return 2;
  }
  if (process.getuid?.() !== 0) throw new Error('run as root (it creates network namespaces)');
  for (const [f, hint] of [
    [FLATNET, 'run `npm run -s build` first'],
    [`${REF_DIR}/bridge`, 'apt-get install -y containernetworking-plugins'],
    [`${REF_DIR}/host-local`, 'apt-get install -y containernetworking-plugins'],
    [GNU_TIME, 'apt-get install -y time'],
  ] as const) {
    if (!existsSync(f)) throw new Error(`${f} is missing: ${hint}`);
  }
  const log = (s: string): void => {
    process.stderr.write(s + '\n');
  };

  const id = randomBytes(3).toString('hex');
  const c: Cleanup = { namespaces: [], dirs: [], workers: [], servers: [], done: false };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`\n${sig}: cleaning up fnb-${id}-*`);
    void cleanup(c).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  try {
    const ns = (s: string): string => `fnb-${id}-${s}`;
    const fnNode = ns('fnode');
    const refNode = ns('rnode');
    const fnPod = ns('fpod');
    const refPod = ns('rpod');
    const agNode = ns('anode');
    const agPod = ns('apod');
    const fnConc = Array.from({ length: concurrency }, (_, i) => ns(`f${i}`));
    const refConc = Array.from({ length: concurrency }, (_, i) => ns(`r${i}`));
    const agConc = Array.from({ length: concurrency }, (_, i) => ns(`a${i}`));
    const all = [fnNode, refNode, agNode, fnPod, refPod, agPod, ...fnConc, ...refConc, ...agConc];
    c.namespaces.push(...all);
    log(`setting up ${all.length} namespaces fnb-${id}-*`);
    await runOk(['ip', '-batch', '-'], { input: all.map((n) => `netns add ${n}\n`).join('') });
    for (const n of [fnNode, refNode, agNode]) await runOk(['ip', '-n', n, 'link', 'set', 'lo', 'up']);

    // Benchmark a private copy of the build: other people rebuilding dist/ mid-run (ETXTBSY, or a different
    // plugin half-way through) must not change what is measured.
    const binDir = mkdtempSync(join(tmpdir(), `fnb-${id}-bin-`));
    c.dirs.push(binDir);
    const flatnetExe = join(binDir, 'flatnet');
    copyFileSync(FLATNET, flatnetExe);
    chmodSync(flatnetExe, 0o755);
    // The netlink addon travels with the plugin (it is looked up beside it); without it the plugin falls
    // back to iproute2 and nft, and the report says so.
    const addon = join(dirname(FLATNET), 'flatnet-netlink.node');
    if (existsSync(addon)) copyFileSync(addon, join(binDir, 'flatnet-netlink.node'));
    else log('dist/cni/flatnet-netlink.node is missing: measuring the iproute2/nft fallback');
    const fnData = mkdtempSync(join(tmpdir(), `fnb-${id}-flatnet-ipam-`));
    const refData = mkdtempSync(join(tmpdir(), `fnb-${id}-ref-ipam-`));
    const agData = mkdtempSync(join(tmpdir(), `fnb-${id}-served-ipam-`));
    const rssDir = mkdtempSync(join(tmpdir(), `fnb-${id}-rss-`));
    c.dirs.push(fnData, refData, agData, rssDir);

    const fnWorker = new Worker(fnNode);
    const refWorker = new Worker(refNode);
    // The served contender's calls must come from the server's mount namespace (it declines others):
    // both are entered with nsenter, which keeps this process's, where `ip netns exec` makes a new one.
    const agWorker = new Worker(agNode, 'nsenter');
    c.workers.push(fnWorker, refWorker, agWorker);
    const server = new ServerHost(agNode);
    c.servers.push(server);
    await server.ready();
    // The served calls' memory is the agent's: its process before any call, and at the end.
    const agentRssBefore = procMemKiB(server.child.pid);

    // The same pod wiring on both sides, as flatnetd's conflist asks for it: gateway on the bridge, default
    // route plus the cluster route in the pod, hairpin on the host port, MTU 1500.
    const common = { isGateway: true, isDefaultGateway: true, hairpinMode: true, mtu: 1500 };
    const routes = [{ dst: '10.99.0.0/16' }];
    const flatnet: Plugin = {
      key: 'flatnet',
      label: 'flatnet',
      exe: flatnetExe,
      cniPath: `${binDir}:${REF_DIR}`,
      config: { cniVersion: '1.1.0', name: 'fnbench', type: 'flatnet', bridge: 'flat0', ...common, ipam: { ranges: [[{ subnet: '10.99.16.0/20' }]], routes, dataDir: fnData } },
      dataDir: fnData,
      network: 'fnbench',
      worker: fnWorker,
      seqPod: fnPod,
      concPods: fnConc,
    };
    const reference: Plugin = {
      key: 'reference',
      label: 'bridge+host-local',
      exe: `${REF_DIR}/bridge`,
      cniPath: REF_DIR,
      config: {
        cniVersion: '1.0.0',
        name: 'refbench',
        type: 'bridge',
        bridge: 'refbr0',
        ...common,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.32.0/20' }]], routes, dataDir: refData },
      },
      dataDir: refData,
      network: 'refbench',
      worker: refWorker,
      seqPod: refPod,
      concPods: refConc,
    };
    const served: Plugin = {
      ...flatnet,
      key: 'served',
      label: 'flatnet, served by flatnetd',
      config: { ...flatnet.config, ipam: { ranges: [[{ subnet: '10.99.48.0/20' }]], routes, dataDir: agData } },
      dataDir: agData,
      worker: agWorker,
      seqPod: agPod,
      concPods: agConc,
    };
    const plugins = [flatnet, reference, served];

    // Warm-up (not recorded): creates each bridge, faults in binaries and the page cache.
    log(`warm-up: ${WARMUP_CYCLES} cycles`);
    for (let i = 0; i < WARMUP_CYCLES; i++) {
      for (const p of plugins) {
        const a = newAttachment(p.seqPod, i);
        await add(p, a);
        await del(p, a);
      }
      await fnWorker.one(nodeJob(true));
      await fnWorker.one(nodeJob(false));
    }

    const perRun: Report['perRun'] = { flatnet: [], reference: [], served: [] };
    const basePerRun: Record<string, Stats[]> = { nodeEnv: [], nodeNoCA: [] };
    // Per run, the median over cycles of (flatnet ADD - node -e 0) within one cycle, for each baseline.
    const pairedPerRun: Record<string, number[]> = { nodeEnv: [], nodeNoCA: [] };
    const loopMax = { sequential: 0, concurrentAdd: 0, concurrentDel: 0 };
    const conc: Record<string, Concurrent[]> = { flatnet: [], reference: [], served: [] };
    const addSamples: Record<string, number[]> = { flatnet: [], reference: [], served: [] };
    const delSamples: Record<string, number[]> = { flatnet: [], reference: [], served: [] };

    for (let r = 0; r < runs; r++) {
      log(`run ${r + 1}/${runs}: ${cycles} ADD/DEL cycles, interleaved`);
      const adds: Record<string, number[]> = { flatnet: [], reference: [], served: [] };
      const dels: Record<string, number[]> = { flatnet: [], reference: [], served: [] };
      const base: Record<string, number[]> = { nodeEnv: [], nodeNoCA: [] };
      await server.sample();
      for (let i = 0; i < cycles; i++) {
        // The three ADDs and the two baselines take every position equally often (a Williams design:
        // each directly follows every other, and the previous cycle's last DEL, equally often), so no
        // contender always runs right after a DEL or right after another's exit.
        const atts = new Map<Plugin, Attachment>();
        for (const step of ADD_PHASE_ORDERS[(i + r) % ADD_PHASE_ORDERS.length]!) {
          if (step < 2 || step === 4) {
            const p = step === 4 ? served : plugins[step]!;
            const a = newAttachment(p.seqPod, i);
            atts.set(p, a);
            adds[p.key]!.push(await add(p, a));
          } else {
            const withCA = step === 2;
            base[withCA ? 'nodeEnv' : 'nodeNoCA']!.push((await fnWorker.one(nodeJob(withCA))).ms);
          }
        }
        const order = rotate(plugins, i + r);
        for (const p of order) dels[p.key]!.push(await del(p, atts.get(p)!));
      }
      for (const p of plugins) {
        perRun[p.key]!.push({ add: statsOf(adds[p.key]!), del: statsOf(dels[p.key]!) });
        addSamples[p.key]!.push(...adds[p.key]!);
        delSamples[p.key]!.push(...dels[p.key]!);
      }
      for (const k of Object.keys(base)) {
        basePerRun[k]!.push(statsOf(base[k]!));
        // One sample of each per cycle, taken within the same second: slow drift cancels in the pair.
        pairedPerRun[k]!.push(percentile(adds['flatnet']!.map((x, i) => x - base[k]![i]!), 0.5));
      }
      loopMax.sequential = Math.max(loopMax.sequential, (await server.sample()).loopDelayMaxMs);

      log(`run ${r + 1}/${runs}: ${concurrency} concurrent ADDs, then ${concurrency} concurrent DELs`);
      const order = rotate(plugins, r);
      const cr = new Map<Plugin, { atts: Attachment[]; out: Concurrent }>();
      for (const p of order) {
        const atts = p.concPods.map((pod, i) => newAttachment(pod, i));
        const out: Concurrent = { addWallMs: NaN, delWallMs: NaN, distinct: 0, failures: 0, leftover: 0 };
        cr.set(p, { atts, out });
        if (p === served) await server.sample();
        await concurrentAdd(p, atts, out);
        if (p === served) loopMax.concurrentAdd = Math.max(loopMax.concurrentAdd, (await server.sample()).loopDelayMaxMs);
      }
      for (const p of order) {
        const { atts, out } = cr.get(p)!;
        if (p === served) await server.sample();
        await concurrentDel(p, atts, out);
        if (p === served) loopMax.concurrentDel = Math.max(loopMax.concurrentDel, (await server.sample()).loopDelayMaxMs);
        conc[p.key]!.push(out);
      }
      const line = (p: Plugin): string => {
        const s = perRun[p.key]!.at(-1)!;
        const o = conc[p.key]!.at(-1)!;
        return `${p.label}: ADD p50 ${s.add.p50.toFixed(1)} DEL p50 ${s.del.p50.toFixed(1)} | ${concurrency}x ADD ${o.addWallMs.toFixed(0)} ms (${o.distinct} IPs) DEL ${o.delWallMs.toFixed(0)} ms`;
      };
      log(`  ${line(flatnet)}\n  ${line(served)}\n  ${line(reference)}\n  node -e 0: ${basePerRun['nodeEnv']!.at(-1)!.p50.toFixed(1)} ms, without NODE_EXTRA_CA_CERTS ${basePerRun['nodeNoCA']!.at(-1)!.p50.toFixed(1)} ms`);
    }

    // Peak RSS, in a separate phase: GNU time adds a fork/exec that must not sit in the latency samples.
    log(`peak RSS: ${RSS_SAMPLES} ADD+DEL per plugin under ${GNU_TIME} -f %M`);
    const rssFile = join(rssDir, 'maxrss');
    const wrap = [GNU_TIME, '-f', '%M', '-o', rssFile];
    const rssKiB: Record<string, number> = { flatnet: 0, reference: 0, served: 0, nodeEnv: 0, nodeNoCA: 0 };
    for (let i = 0; i < RSS_SAMPLES; i++) {
      for (const p of rotate(plugins, i)) {
        const a = newAttachment(p.seqPod, i);
        const added = await peakRss(p.worker, pluginJob(p, 'ADD', a, wrap), rssFile);
        a.result = JSON.parse(added.stdout) as Record<string, unknown>;
        const deleted = await peakRss(p.worker, pluginJob(p, 'DEL', a, wrap), rssFile);
        rssKiB[p.key] = Math.max(rssKiB[p.key]!, added.kib, deleted.kib);
      }
      rssKiB['nodeEnv'] = Math.max(rssKiB['nodeEnv']!, (await peakRss(fnWorker, nodeJob(true, wrap), rssFile)).kib);
      rssKiB['nodeNoCA'] = Math.max(rssKiB['nodeNoCA']!, (await peakRss(fnWorker, nodeJob(false, wrap), rssFile)).kib);
    }
    const rssMB = Object.fromEntries(Object.entries(rssKiB).map(([k, v]) => [k, (v * 1024) / 1e6]));

    // Aggregate: median over runs of each run's percentile.
    const agg = (k: string) => ({
      addP50: median(perRun[k]!.map((s) => s.add.p50)),
      addP90: median(perRun[k]!.map((s) => s.add.p90)),
      delP50: median(perRun[k]!.map((s) => s.del.p50)),
      delP90: median(perRun[k]!.map((s) => s.del.p90)),
    });
    const latency = { flatnet: agg('flatnet'), reference: agg('reference'), served: agg('served') };
    const baseline = Object.fromEntries(
      Object.entries(basePerRun).map(([k, v]) => [k, { p50: median(v.map((s) => s.p50)), p90: median(v.map((s) => s.p90)) }]),
    ) as Record<'nodeEnv' | 'nodeNoCA', { p50: number; p90: number }>;
    const concurrent = Object.fromEntries(
      plugins.map((p) => {
        const xs = conc[p.key]!;
        return [
          p.key,
          {
            addWallMs: median(xs.map((x) => x.addWallMs)),
            delWallMs: median(xs.map((x) => x.delWallMs)),
            distinctMin: Math.min(...xs.map((x) => x.distinct)),
            failures: xs.reduce((n, x) => n + x.failures, 0),
            leftoverMax: Math.max(...xs.map((x) => x.leftover)),
          },
        ];
      }),
    );
    // "Own work above bare Node start": subtract the cheaper of the two bare starts. The plugin's launcher
    // drops NODE_EXTRA_CA_CERTS, so subtracting the start *with* it would hide ~40 ms of the plugin's own cost.
    const cheaper = baseline.nodeNoCA.p50 <= baseline.nodeEnv.p50 ? 'nodeNoCA' : 'nodeEnv';
    const derived = {
      ownWorkMs: latency.flatnet.addP50 - baseline[cheaper].p50,
      ownWorkBaseline: cheaper === 'nodeNoCA' ? 'node -e 0 without NODE_EXTRA_CA_CERTS' : 'node -e 0 (environment as given)',
      ownWorkVsCaEnvMs: latency.flatnet.addP50 - baseline.nodeEnv.p50,
      ownWorkPairedMs: median(pairedPerRun[cheaper]!),
      addRatio: latency.flatnet.addP50 / latency.reference.addP50,
      delRatio: latency.flatnet.delP50 / latency.reference.delP50,
      servedAddRatio: latency.served.addP50 / latency.reference.addP50,
      servedDelRatio: latency.served.delP50 / latency.reference.delP50,
    };
    const floors = [
      { name: 'own work per ADD (ms)', value: derived.ownWorkMs, limit: FLOOR_OWN_WORK_MS },
      { name: 'ADD p50 flatnet/reference', value: derived.addRatio, limit: FLOOR_ADD_RATIO },
      { name: 'DEL p50 flatnet/reference', value: derived.delRatio, limit: FLOOR_DEL_RATIO },
      { name: 'flatnet peak RSS (MB)', value: rssMB['flatnet']!, limit: FLOOR_RSS_MB },
    ].map((f) => ({ ...f, pass: f.value <= f.limit }));
    const checks = plugins.map((p) => ({
      name: `${p.label}: ${concurrency} concurrent ADDs gave ${concurrency} distinct IPs, all DELs released them`,
      pass: concurrent[p.key]!.distinctMin === concurrency && concurrent[p.key]!.failures === 0 && concurrent[p.key]!.leftoverMax === 0,
    }));
    // The served contender's numbers mean something only if the agent served its calls (it declines what
    // it must not serve, and the plugin then runs itself without a trace in the output).
    const m = await server.metrics();
    const servedCalls = calls(m, undefined, 'ok');
    const refused = calls(m) - servedCalls;
    const agentRssAfter = procMemKiB(server.child.pid);
    checks.push({ name: `flatnetd served all ${servedCalls} calls of the served contender (declined or failed: ${refused})`, pass: refused === 0 && servedCalls > 0 });

    const report: Report = {
      machine: {
        cycles,
        runs,
        concurrency,
        loadavg: readFileSync('/proc/loadavg', 'utf8').trim(),
        note: 'shared 2-vCPU machine; other jobs were running',
      },
      perRun,
      latency,
      baseline,
      concurrent,
      rssMB,
      agentMemMB: { rssBefore: (agentRssBefore.rss * 1024) / 1e6, rssAfter: (agentRssAfter.rss * 1024) / 1e6, peak: (agentRssAfter.hwm * 1024) / 1e6 },
      agentLoopDelayMaxMs: loopMax,
      derived,
      floors,
      checks,
    };
    if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    else printTable(report, addSamples, delSamples);
    const ok = floors.every((f) => f.pass) && checks.every((x) => x.pass);
    return values.strict && !ok ? 1 : 0;
  } finally {
    await cleanup(c);
  }
}

function printTable(r: Report, addSamples: Record<string, number[]>, delSamples: Record<string, number[]>): void {
  const f1 = (x: number): string => x.toFixed(1).padStart(7);
  const out: string[] = [];
  out.push(`CNI plugin latency: ${r.machine.runs} runs x ${r.machine.cycles} cycles (ms; median over runs of per-run p50/p90)`);
  out.push(`${'contender'.padEnd(40)}${'ADD p50'.padStart(9)}${'ADD p90'.padStart(9)}${'DEL p50'.padStart(9)}${'DEL p90'.padStart(9)}${'peak MB'.padStart(9)}`);
  const row = (name: string, a: number, b: number, c: number, d: number, m: number): void => {
    out.push(`${name.padEnd(40)}  ${f1(a)}  ${f1(b)}  ${f1(c)}  ${f1(d)}  ${f1(m)}`);
  };
  row('flatnet (1.1.0, built-in IPAM)', r.latency['flatnet']!.addP50, r.latency['flatnet']!.addP90, r.latency['flatnet']!.delP50, r.latency['flatnet']!.delP90, r.rssMB['flatnet']!);
  row('flatnet, served by flatnetd', r.latency['served']!.addP50, r.latency['served']!.addP90, r.latency['served']!.delP50, r.latency['served']!.delP90, r.rssMB['served']!);
  row('bridge + host-local (1.0.0)', r.latency['reference']!.addP50, r.latency['reference']!.addP90, r.latency['reference']!.delP50, r.latency['reference']!.delP90, r.rssMB['reference']!);
  out.push(`${'node -e 0 (env incl. NODE_EXTRA_CA_CERTS)'.padEnd(40)}  ${f1(r.baseline['nodeEnv']!.p50)}  ${f1(r.baseline['nodeEnv']!.p90)}${''.padStart(18)}  ${f1(r.rssMB['nodeEnv']!)}`);
  out.push(`${'node -e 0 (NODE_EXTRA_CA_CERTS unset)'.padEnd(40)}  ${f1(r.baseline['nodeNoCA']!.p50)}  ${f1(r.baseline['nodeNoCA']!.p90)}${''.padStart(18)}  ${f1(r.rssMB['nodeNoCA']!)}`);
  out.push(`all samples pooled, ADD p50: flatnet ${percentile(addSamples['flatnet']!, 0.5).toFixed(1)}, served ${percentile(addSamples['served']!, 0.5).toFixed(1)}, reference ${percentile(addSamples['reference']!, 0.5).toFixed(1)}; DEL p50: flatnet ${percentile(delSamples['flatnet']!, 0.5).toFixed(1)}, served ${percentile(delSamples['served']!, 0.5).toFixed(1)}, reference ${percentile(delSamples['reference']!, 0.5).toFixed(1)}`);
  out.push('');
  out.push(`${r.machine.concurrency} concurrent (wall ms, median over runs)   ADD      DEL   distinct IPs (min)  failures  leftover reservations`);
  for (const [k, label] of [['flatnet', 'flatnet'], ['served', 'flatnet, served by flatnetd'], ['reference', 'bridge + host-local']] as const) {
    const c = r.concurrent[k]!;
    out.push(`${label.padEnd(40)}${c.addWallMs.toFixed(0).padStart(6)} ${c.delWallMs.toFixed(0).padStart(8)}   ${String(c.distinctMin).padStart(6)}${String(c.failures).padStart(18)}${String(c.leftoverMax).padStart(10)}`);
  }
  out.push('');
  out.push(`own work per ADD = flatnet ADD p50 - ${r.derived.ownWorkBaseline} p50 = ${r.derived.ownWorkMs.toFixed(1)} ms (vs node -e 0 with the environment as given: ${r.derived.ownWorkVsCaEnvMs.toFixed(1)} ms)`);
  out.push(`  paired within cycles (beside the floor's figure): median of (flatnet ADD - ${r.derived.ownWorkBaseline}) in the same cycle = ${r.derived.ownWorkPairedMs.toFixed(1)} ms`);
  for (const f of r.floors) out.push(`${f.pass ? 'PASS' : 'FAIL'}  ${f.name.padEnd(28)} ${f.value.toFixed(2).padStart(8)}  (floor <= ${f.limit})`);
  out.push(`the serving process (the agent's server under tsx): RSS ${r.agentMemMB.rssBefore.toFixed(1)} MB before the first call, ${r.agentMemMB.rssAfter.toFixed(1)} MB after the last (peak ${r.agentMemMB.peak.toFixed(1)} MB); a served call's own process is the launcher alone`);
  const l = r.agentLoopDelayMaxMs;
  out.push(`the serving process's event loop was held at most ${l.sequential.toFixed(0)} ms with one call at a time, ${l.concurrentAdd.toFixed(0)} ms during ${r.machine.concurrency} concurrent ADDs, ${l.concurrentDel.toFixed(0)} ms during the DELs (what serving costs the rest of an agent)`);
  out.push(`served by flatnetd (beside the floors, which are about the standalone plugin): ADD p50 / reference ${r.derived.servedAddRatio.toFixed(2)}, DEL p50 / reference ${r.derived.servedDelRatio.toFixed(2)}`);
  for (const x of r.checks) out.push(`${x.pass ? 'PASS' : 'FAIL'}  ${x.name}`);
  out.push(`load average at the end: ${r.machine.loadavg} (${r.machine.note})`);
  process.stdout.write(out.join('\n') + '\n');
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`cni-latency: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
