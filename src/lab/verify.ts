// `lab verify`: starts an echo server in every pod and on the outside host, runs one probe process per
// sending namespace (each carrying all of that sender's probes, 16 in flight), judges every answer by
// the rules in verify-checks.ts and cross-checks what each agent says about its peers. A 3-node lab
// with 2 pods per node runs ~150 probes in 9 processes: a few seconds.
import type { ChildProcess } from 'node:child_process';
import { inNetns, run, runOk } from '../linux/run.ts';
import { agentStatus } from './agents.ts';
import type { ProbeOutcome, ProbeRequest } from './echo.ts';
import type { LabContext } from './lab.ts';
import { requireState } from './lab.ts';
import { spawnChild, stopPids } from './processes.ts';
import type { LabState } from './state.ts';
import { expectReachable, planNode, planOutside } from './topology.ts';
import { ECHO_TCP_PORT, ECHO_UDP_PORT, judge, planChecks, renderMatrix, renderSummary } from './verify-checks.ts';
import type { Check, Judged, VerifyNode } from './verify-checks.ts';

export interface AgentView {
  readonly node: string;
  readonly peer: string;
  readonly reported: boolean | undefined;
  readonly expected: boolean;
  readonly pass: boolean;
  readonly reason?: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly results: readonly Judged[];
  readonly agents: readonly AgentView[];
  readonly text: string;
}

/** Every global and site address in a namespace (no prefix length). */
export async function namespaceAddresses(netns: string): Promise<string[]> {
  const r = await runOk(inNetns(netns, ['ip', '-j', 'addr', 'show']));
  const links = JSON.parse(r.stdout || '[]') as { addr_info?: { local?: string; scope?: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.scope === 'global' && typeof a.local === 'string').map((a) => a.local!));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** IPv6 addresses stay "tentative" during duplicate address detection (~1-2 s) and cannot be used yet. */
async function waitNoTentative(netns: readonly string[], timeoutMs = 6_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const ns of netns) {
    while (Date.now() < deadline) {
      const r = await run(inNetns(ns, ['ip', '-6', 'addr', 'show', 'tentative']));
      if (r.stdout.trim() === '') break;
      await sleep(200);
    }
  }
}

function startEchoIn(self: string, netns: string): Promise<ChildProcess> {
  const child = spawnChild(inNetns(netns, [self, '__echo', '--tcp', String(ECHO_TCP_PORT), '--udp', String(ECHO_UDP_PORT), '--ttl', '300']));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`echo server in ${netns} did not start: ${err.trim()}`)), 10_000);
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr?.on('data', (b: Buffer) => (err += b.toString('utf8')));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`echo server in ${netns} exited (${code}): ${err.trim()}`));
    });
  });
}

async function runProbes(self: string, netns: string, reqs: readonly ProbeRequest[]): Promise<ProbeOutcome[]> {
  const r = await run(inNetns(netns, [self, '__probe', '--batch']), { input: JSON.stringify(reqs), timeoutMs: 120_000 });
  if (r.code !== 0) {
    return reqs.map((q) => ({ id: q.id, ok: false, error: `probe process failed: ${r.stderr.trim().slice(0, 200)}`, ms: 0 }));
  }
  return JSON.parse(r.stdout) as ProbeOutcome[];
}

async function agentViews(state: LabState): Promise<AgentView[]> {
  const o = state.options;
  const views: AgentView[] = [];
  for (const n of state.nodes) {
    const me = planNode(n.index, o);
    let peers: readonly { node: string; reachable: boolean; reason?: string }[] = [];
    let down = '';
    try {
      peers = (await agentStatus(o.root, n.name)).peers;
    } catch (e) {
      down = (e as Error).message;
    }
    for (const p of state.nodes) {
      if (p.name === n.name) continue;
      const expected = expectReachable(o.backend, me, planNode(p.index, o));
      const seen = peers.find((x) => x.node === p.name);
      views.push({
        node: n.name,
        peer: p.name,
        reported: seen?.reachable,
        expected,
        pass: seen !== undefined && seen.reachable === expected,
        ...(down ? { reason: `agent down: ${down}` } : seen?.reason ? { reason: seen.reason } : seen ? {} : { reason: 'peer not listed' }),
      });
    }
  }
  return views;
}

export async function verify(ctx: LabContext, root: string): Promise<VerifyReport> {
  const state = requireState(root);
  const o = state.options;
  const t0 = Date.now();
  const outside = planOutside(o);
  const nodes: VerifyNode[] = await Promise.all(state.nodes.map(async (n) => ({ plan: planNode(n.index, o), addresses: await namespaceAddresses(n.netns) })));
  const agents = await agentViews(state);
  if (o.ipv6) await waitNoTentative(state.pods.map((p) => p.netns));

  const checks = planChecks({ backend: o.backend, nodes, pods: state.pods, outside, prefix: o.prefix });
  ctx.progress(`verify: ${checks.length} probes from ${new Set(checks.map((c) => c.fromNetns)).size} namespaces`);
  const servers: ChildProcess[] = [];
  const results: Judged[] = [];
  try {
    const targets = [...state.pods.map((p) => p.netns), outside.netns];
    servers.push(...(await Promise.all(targets.map((ns) => startEchoIn(ctx.paths.self, ns)))));
    const bySource = new Map<string, Check[]>();
    for (const c of checks) bySource.set(c.fromNetns, [...(bySource.get(c.fromNetns) ?? []), c]);
    const groups = [...bySource.entries()];
    // Three probe processes at a time: the machine has two cores and each process starts a Node runtime.
    for (let i = 0; i < groups.length; i += 3) {
      await Promise.all(
        groups.slice(i, i + 3).map(async ([ns, cs]) => {
          const outcomes = await runProbes(ctx.paths.self, ns, cs.map((c) => c.request));
          const byId = new Map(outcomes.map((x) => [x.id, x]));
          for (const c of cs) results.push(judge(c, byId.get(c.id) ?? { id: c.id, ok: false, error: 'no outcome', ms: 0 }));
        }),
      );
    }
  } finally {
    await stopPids(servers.map((s) => s.pid).filter((p): p is number => p !== undefined), 1_000);
  }
  const order = new Map(checks.map((c, i) => [c.id, i]));
  results.sort((a, b) => (order.get(a.check.id) ?? 0) - (order.get(b.check.id) ?? 0));

  const lines: string[] = [];
  lines.push(`lab verify: ${state.nodes.length} node(s), ${state.pods.length} pod(s), backend ${o.backend}, store ${o.store}, topology ${o.topology}${o.ipv6 ? ', dual-stack' : ''}`);
  lines.push('');
  lines.push('agents (peer reachability as each agent reports it):');
  for (const a of agents) {
    lines.push(`  ${a.pass ? 'ok  ' : 'FAIL'} ${a.node} -> ${a.peer}: ${a.reported === undefined ? 'unknown' : a.reported ? 'reachable' : 'unreachable'}${a.expected ? '' : ' (expected: host-gw cannot cross segments)'}${a.reason ? ` [${a.reason}]` : ''}`);
  }
  if (agents.length === 0) lines.push('  (single node)');
  lines.push('');
  lines.push('matrix (ok = reached with the right source address; blocked = unreachable as the backend predicts):');
  lines.push(renderMatrix(results, o.prefix, state.pods.map((p) => p.name)));
  lines.push(renderSummary(results));
  const ok = results.every((r) => r.pass) && agents.every((a) => a.pass);
  lines.push('');
  lines.push(`${ok ? 'PASS' : 'FAIL'}: ${results.filter((r) => r.pass).length}/${results.length} probes, ${agents.filter((a) => a.pass).length}/${agents.length} agent views, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { ok, results, agents, text: lines.join('\n') };
}
