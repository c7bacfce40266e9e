// Shared by the fault-injection e2e tests (test/e2e/fault-*.test.ts): a lab with its own prefix and root
// driven through the programmatic API (src/lab/lab.ts), and small readers of what the agents and the
// kernel say. Every lab made here is removed by `labDown` (call it in after(), it also runs on failure).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { getFromSocket } from '../../src/lab/agents.ts';
import type { HttpAnswer } from '../../src/lab/agents.ts';
import { down, up } from '../../src/lab/lab.ts';
import type { LabContext } from '../../src/lab/lab.ts';
import { cmdlineOf, isAlive, spawnChild } from '../../src/lab/processes.ts';
import { readState } from '../../src/lab/state.ts';
import type { LabState } from '../../src/lab/state.ts';
import { nodePaths } from '../../src/lab/topology.ts';
import type { LabOptions } from '../../src/lab/topology.ts';
import { inNetns, run, runOk } from '../../src/linux/run.ts';
import { waitFor } from './wait.ts';

export { waitFor };

const DIST = resolve(import.meta.dirname, '../../dist');

/**
 * Added to every "within N resync periods" bound: the time a reconcile itself takes (it spawns ip/nft
 * several times) on a 2-core CI machine shared with other jobs. Measured times are printed by each test.
 */
export const SLACK_MS = 3_000;

export interface TestLab {
  readonly prefix: string;
  readonly root: string;
  readonly ctx: LabContext;
  /** Progress lines of every lab call (printed when a test fails). */
  readonly progress: string[];
}

export function newLab(label: string): TestLab {
  const prefix = `fnt${randomBytes(2).toString('hex')}-`;
  const progress: string[] = [];
  const paths = { self: `${DIST}/bin/flatnet`, flatnetd: `${DIST}/bin/flatnetd`, cniDir: `${DIST}/cni` };
  for (const p of [paths.self, paths.flatnetd, `${paths.cniDir}/flatnet`]) assert.ok(existsSync(p), `${p} missing: run npm run build`);
  return {
    prefix,
    root: `/tmp/${prefix}${label}`,
    ctx: { paths, progress: (line) => progress.push(`${new Date().toISOString().slice(11, 23)} ${line}`) },
    progress,
  };
}

export type UpOptions = Partial<Omit<LabOptions, 'prefix' | 'root'>>;

export async function labUp(lab: TestLab, o: UpOptions): Promise<LabState> {
  return up(lab.ctx, {
    nodes: 2,
    pods: 1,
    backend: 'host-gw',
    store: 'embedded',
    ipv6: false,
    topology: 'flat',
    ...o,
    prefix: lab.prefix,
    root: lab.root,
  });
}

export async function labNamespaces(prefix: string): Promise<string[]> {
  const r = await run(['ip', 'netns', 'list']);
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(prefix));
}

/** Removes the lab (processes, namespaces, root) and checks nothing with its prefix is left. */
export async function labDown(lab: TestLab): Promise<void> {
  await down(lab.ctx, lab.prefix, lab.root);
  assert.deepEqual(await labNamespaces(lab.prefix), [], 'lab down left namespaces behind');
  assert.equal(existsSync(lab.root), false, 'lab down left the root directory');
}

export function state(lab: TestLab): LabState {
  const s = readState(lab.root);
  assert.ok(s, `no lab state in ${lab.root}`);
  return s;
}

export function nodeNetns(lab: TestLab, node: string): string {
  return `${lab.prefix}${node}`;
}

export function agentPid(lab: TestLab, node: string): number {
  const pid = state(lab).nodes.find((n) => n.name === node)?.agentPid;
  assert.ok(pid !== undefined, `no agent pid recorded for ${node}`);
  return pid;
}

/** SIGKILLs the node's agent (the pid the lab recorded, after checking it is this lab's) and waits until it is gone. */
export async function killAgent(lab: TestLab, node: string): Promise<void> {
  const pid = agentPid(lab, node);
  assert.ok(isAlive(pid), `agent of ${node} (pid ${pid}) is not running`);
  assert.ok(cmdlineOf(pid)?.includes(lab.root), `pid ${pid} is not this lab's agent`);
  process.kill(pid, 'SIGKILL');
  await waitFor(`agent ${node} gone`, 5_000, () => !isAlive(pid));
}

export function agentGet(lab: TestLab, node: string, path: string, timeoutMs = 2_000): Promise<HttpAnswer> {
  return getFromSocket(nodePaths(lab.root, node).socket, path, timeoutMs);
}

export interface AgentStatusJson {
  node: string;
  podCIDRs: string[];
  underlayIPs: string[];
  ready: boolean;
  notReadyReasons: string[];
  peers: { node: string; podCIDRs: string[]; underlayIPs: string[]; reachable: boolean }[];
  lastError?: string;
}

export async function agentStatus(lab: TestLab, node: string): Promise<AgentStatusJson> {
  const a = await agentGet(lab, node, '/status');
  assert.equal(a.status, 200, `/status of ${node}: ${a.status}`);
  return JSON.parse(a.body) as AgentStatusJson;
}

/** The value of one Prometheus series (labels exactly as given, e.g. 'op="deleted"'); 0 when absent. */
export function metricValue(text: string, name: string, labels = ''): number {
  const want = labels ? `${name}{${labels}}` : name;
  for (const line of text.split('\n')) {
    const sp = line.lastIndexOf(' ');
    if (sp > 0 && line.slice(0, sp) === want) return Number(line.slice(sp + 1));
  }
  return 0;
}

export async function metrics(lab: TestLab, node: string): Promise<string> {
  const a = await agentGet(lab, node, '/metrics');
  assert.equal(a.status, 200);
  return a.body;
}

/** flatnet_datapath_changes_total, both ops summed. */
export function datapathChanges(text: string): number {
  return metricValue(text, 'flatnet_datapath_changes_total', 'op="replaced"') + metricValue(text, 'flatnet_datapath_changes_total', 'op="deleted"');
}

export interface RouteEntry {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
}

/** IPv4 routes of the main table in a namespace (all protocols); `proto` filters as `ip route show proto`. */
export async function routes(netns: string, proto?: string): Promise<RouteEntry[]> {
  const r = await runOk(['ip', '-n', netns, '-j', '-4', 'route', 'show', 'table', 'main', ...(proto !== undefined ? ['proto', proto] : [])]);
  const list = JSON.parse(r.stdout.trim() || '[]') as RouteEntry[];
  return list.map((x) => ({ ...x, ...(proto !== undefined ? { protocol: proto } : {}) }));
}

/** Routes of protocol 241 (flatnet's label) as "dst via gw dev" strings, sorted. */
export async function flatnetRoutes(netns: string): Promise<string[]> {
  return (await routes(netns, '241')).map((x) => `${x.dst}${x.gateway ? ` via ${x.gateway}` : ''} dev ${x.dev ?? '?'}`).sort();
}

/** TCP retransmitted segments counted by the namespace's own stack (/proc/net/snmp is per network namespace). */
export async function tcpRetransmits(netns: string): Promise<number> {
  const text = (await runOk(inNetns(netns, ['cat', '/proc/net/snmp']))).stdout;
  const lines = text.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = names.indexOf('RetransSegs');
  assert.ok(i > 0, 'no Tcp RetransSegs in /proc/net/snmp');
  return Number(values[i]);
}

export function readLog(lab: TestLab, node: string): string {
  try {
    return readFileSync(nodePaths(lab.root, node).log, 'utf8');
  } catch {
    return '';
  }
}

/** The agent's log lines (JSON) as objects. */
export function agentLog(lab: TestLab, node: string): Record<string, unknown>[] {
  const text = readLog(lab, node);
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* a line cut by SIGKILL */
    }
  }
  return out;
}

/** Printable context for a failed assertion: the lab's progress and the tail of each agent log. */
export async function diagnostics(lab: TestLab): Promise<string> {
  const parts = [`lab progress:\n${lab.progress.slice(-20).join('\n')}`];
  const s = readState(lab.root);
  for (const n of s?.nodes ?? []) {
    try {
      const st = await agentStatus(lab, n.name);
      const m = await metrics(lab, n.name);
      const keep = m.split('\n').filter((l) => /^flatnet_(reconcile_total|ready|store_up|errors_total|datapath_changes_total)/.test(l));
      parts.push(`--- ${n.name} agent: ready ${st.ready} ${st.notReadyReasons.join(', ')}; lastError ${st.lastError ?? '-'}; ${keep.join(' ')}`);
    } catch (e) {
      parts.push(`--- ${n.name} agent does not answer: ${(e as Error).message}`);
    }
    parts.push(`--- ${n.name} agent log (tail):\n${readLog(lab, n.name).trimEnd().split('\n').slice(-15).join('\n')}`);
  }
  return parts.join('\n');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `ip -o monitor route` inside a namespace, started by this test and ended by its own pid. `ready()` proves
 * the monitor sees events before the test relies on it: it adds and deletes a blackhole route of another
 * protocol (198.51.100.0/24 proto 242, which no agent touches) and waits for both events.
 */
export class RouteMonitor {
  private out = '';
  private readonly child: ChildProcess;

  constructor(readonly netns: string) {
    this.child = spawnChild(['ip', '-n', netns, '-o', 'monitor', 'route']);
    this.child.stdout?.on('data', (b: Buffer) => (this.out += b.toString('utf8')));
  }

  async ready(): Promise<void> {
    const probe = '198.51.100.0/24';
    for (let i = 0; i < 50 && !this.out.includes(probe); i++) {
      await run(['ip', '-n', this.netns, 'route', 'replace', 'blackhole', probe, 'proto', '242']);
      await sleep(100);
    }
    await runOk(['ip', '-n', this.netns, 'route', 'del', 'blackhole', probe, 'proto', '242']);
    await waitFor(`route monitor in ${this.netns} sees events`, 5_000, () => this.lines().some((l) => l.startsWith('Deleted') && l.includes(probe)), 50);
    this.out = '';
  }

  lines(): string[] {
    return this.out.split('\n').filter((l) => l.trim() !== '');
  }

  /** Events about flatnet's routes (protocol 241) seen since ready(). */
  flatnetEvents(): string[] {
    return this.lines().filter((l) => /\bproto 241\b/.test(l));
  }

  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

const TCP_EXT = ['TCPLossProbes', 'TCPLossProbeRecovery', 'TCPTimeouts', 'TCPFastRetrans', 'TCPSlowStartRetrans', 'TCPSpuriousRTOs', 'TCPDSACKRecv', 'TCPDSACKOldSent', 'TCPDSACKOfoSent', 'TCPLostRetransmit', 'TCPSackRecoveryFail'];

/** TCP counters of a namespace's stack: RetransSegs (/proc/net/snmp) and a few TcpExt ones (/proc/net/netstat) that tell why. */
export async function tcpCounters(netns: string): Promise<Record<string, number>> {
  const out: Record<string, number> = { RetransSegs: await tcpRetransmits(netns) };
  const text = (await runOk(inNetns(netns, ['cat', '/proc/net/netstat']))).stdout;
  const lines = text.split('\n').filter((l) => l.startsWith('TcpExt:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  for (const k of TCP_EXT) {
    const i = names.indexOf(k);
    if (i > 0) out[k] = Number(values[i]);
  }
  return out;
}

export function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v !== (a[k] ?? 0)) d[k] = v - (a[k] ?? 0);
  return d;
}

/**
 * Segments one direction of a connection really lost: what the sender retransmitted minus what the
 * receiver reported back as duplicates (D-SACK for data it already had). A spurious retransmission --
 * a tail-loss probe or an early RTO on a busy machine -- is answered with a D-SACK; a lost segment is not.
 */
export function segmentsLost(senderDelta: Record<string, number>, receiverDelta: Record<string, number>): number {
  return (senderDelta['RetransSegs'] ?? 0) - (receiverDelta['TCPDSACKOldSent'] ?? 0) - (receiverDelta['TCPDSACKOfoSent'] ?? 0);
}
