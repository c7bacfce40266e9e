// What `lab verify` checks, and how it judges and prints the answers -- pure, so the rules of the
// Kubernetes network model are tested without root:
//  - pod -> pod, same node and across nodes, TCP and UDP: the server must see the client pod's own
//    address (no NAT); across nodes also 2000-byte payloads both ways (TCP and one UDP datagram), so a
//    wrong MTU anywhere on the path shows;
//  - node -> pod (the node's host network, own node and other nodes): the server must see one of that
//    node's own addresses;
//  - pod -> outside host: the outside host must see the node's underlay address (masquerade), since
//    nothing routes pod CIDRs back to it;
//  - a pair whose nodes the backend cannot connect (host-gw across routed segments) is expected to be
//    blocked, and passes only when it is.
import { expectReachable } from './topology.ts';
import type { Backend, NodePlan } from './topology.ts';
import type { ProbeOutcome, ProbeRequest, Proto } from './echo.ts';

export const ECHO_TCP_PORT = 7070;
export const ECHO_UDP_PORT = 7071;
export const SMALL = 64;
export const LARGE = 2000;

export type Family = 4 | 6;

export type Category = 'pod-pod same node' | 'pod-pod across nodes' | 'pod-pod 2000 B across nodes' | 'node-pod own node' | 'node-pod other node' | 'pod-outside masquerade';

export const CATEGORIES: readonly Category[] = ['pod-pod same node', 'pod-pod across nodes', 'pod-pod 2000 B across nodes', 'node-pod own node', 'node-pod other node', 'pod-outside masquerade'];

export interface VerifyPod {
  readonly name: string;
  readonly netns: string;
  readonly node: string;
  readonly ips: readonly string[];
}

export interface VerifyNode {
  readonly plan: NodePlan;
  /** Every address the node's namespace holds (what a node-sourced packet may carry). */
  readonly addresses: readonly string[];
}

export interface VerifyInput {
  readonly backend: Backend;
  readonly nodes: readonly VerifyNode[];
  readonly pods: readonly VerifyPod[];
  readonly outside: { readonly netns: string; readonly ips: readonly string[] };
  readonly prefix: string;
}

export interface Check {
  readonly id: string;
  /** Namespace the probe runs in. */
  readonly fromNetns: string;
  /** Row label: pod name or node name. */
  readonly from: string;
  /** Column label: pod name or "outside". */
  readonly to: string;
  readonly family: Family;
  readonly category: Category;
  readonly request: ProbeRequest;
  readonly expectReach: boolean;
  /** Addresses the server may report as the sender. */
  readonly expectSaw: readonly string[];
}

export interface Judged {
  readonly check: Check;
  readonly outcome: ProbeOutcome;
  readonly pass: boolean;
  readonly why: string;
}

const familyOf = (a: string): Family => (a.includes(':') ? 6 : 4);
const ipOf = (ips: readonly string[], f: Family): string | undefined => ips.find((a) => familyOf(a) === f);

export function planChecks(input: VerifyInput): Check[] {
  const checks: Check[] = [];
  const nodeByName = new Map(input.nodes.map((n) => [n.plan.name, n]));
  let seq = 0;
  const add = (c: Omit<Check, 'id' | 'request'>, proto: Proto, addr: string, size: number): void => {
    const id = `c${seq++}`;
    const timeoutMs = c.expectReach ? 3_000 : 1_000;
    checks.push({ ...c, id, request: { id, proto, addr, port: proto === 'tcp' ? ECHO_TCP_PORT : ECHO_UDP_PORT, size, timeoutMs } });
  };
  for (const f of [4, 6] as const) {
    for (const src of input.pods) {
      const srcIP = ipOf(src.ips, f);
      const srcNode = nodeByName.get(src.node);
      if (!srcIP || !srcNode) continue;
      for (const dst of input.pods) {
        const dstIP = ipOf(dst.ips, f);
        const dstNode = nodeByName.get(dst.node);
        if (dst.name === src.name || !dstIP || !dstNode) continue;
        const same = src.node === dst.node;
        const base = { fromNetns: src.netns, from: src.name, to: dst.name, family: f, expectReach: expectReachable(input.backend, srcNode.plan, dstNode.plan), expectSaw: [srcIP] };
        const category: Category = same ? 'pod-pod same node' : 'pod-pod across nodes';
        add({ ...base, category }, 'tcp', dstIP, SMALL);
        add({ ...base, category }, 'udp', dstIP, SMALL);
        if (!same) {
          add({ ...base, category: 'pod-pod 2000 B across nodes' }, 'tcp', dstIP, LARGE);
          add({ ...base, category: 'pod-pod 2000 B across nodes' }, 'udp', dstIP, LARGE);
        }
      }
      const outIP = ipOf(input.outside.ips, f);
      const underlay = ipOf(srcNode.plan.underlayIPs, f);
      if (outIP && underlay) {
        const base = { fromNetns: src.netns, from: src.name, to: 'outside', family: f, category: 'pod-outside masquerade' as const, expectReach: true, expectSaw: [underlay] };
        add(base, 'tcp', outIP, SMALL);
        add(base, 'udp', outIP, SMALL);
      }
    }
    for (const n of input.nodes) {
      const own = n.addresses.filter((a) => familyOf(a) === f);
      if (own.length === 0) continue;
      for (const dst of input.pods) {
        const dstIP = ipOf(dst.ips, f);
        const dstNode = nodeByName.get(dst.node);
        if (!dstIP || !dstNode) continue;
        const same = dst.node === n.plan.name;
        const base = {
          fromNetns: n.plan.netns,
          from: n.plan.name,
          to: dst.name,
          family: f,
          category: (same ? 'node-pod own node' : 'node-pod other node') as Category,
          expectReach: expectReachable(input.backend, n.plan, dstNode.plan),
          expectSaw: own,
        };
        add(base, 'tcp', dstIP, SMALL);
        add(base, 'udp', dstIP, SMALL);
      }
    }
  }
  return checks;
}

export function judge(check: Check, outcome: ProbeOutcome): Judged {
  const what = `${check.request.proto.toUpperCase()} ${check.request.size} B ${check.from} -> ${check.to} (${check.request.addr})`;
  if (!check.expectReach) {
    return outcome.ok
      ? { check, outcome, pass: false, why: `${what}: got through although the backend cannot connect these nodes` }
      : { check, outcome, pass: true, why: `${what}: blocked, as expected` };
  }
  if (!outcome.ok) return { check, outcome, pass: false, why: `${what}: ${outcome.error ?? 'failed'}` };
  if (outcome.bytes !== check.request.size || outcome.returned !== check.request.size) {
    return { check, outcome, pass: false, why: `${what}: sent ${check.request.size} B, server got ${outcome.bytes} B, ${outcome.returned} B came back` };
  }
  if (!check.expectSaw.includes(outcome.saw ?? '')) {
    return { check, outcome, pass: false, why: `${what}: server saw ${outcome.saw}, expected ${check.expectSaw.join(' or ')}` };
  }
  return { check, outcome, pass: true, why: `${what}: ok, seen as ${outcome.saw}` };
}

export interface CategoryCount {
  readonly category: Category;
  readonly family: Family;
  readonly passed: number;
  readonly total: number;
  readonly blocked: number;
}

export function countByCategory(results: readonly Judged[]): CategoryCount[] {
  const out: CategoryCount[] = [];
  for (const f of [4, 6] as const) {
    for (const c of CATEGORIES) {
      const rs = results.filter((r) => r.check.category === c && r.check.family === f);
      if (rs.length === 0) continue;
      out.push({ category: c, family: f, total: rs.length, passed: rs.filter((r) => r.pass).length, blocked: rs.filter((r) => !r.check.expectReach).length });
    }
  }
  return out;
}

/** A pair's cell: "ok" (all reached), "blocked" (all expected blocked and were), "FAIL", or "-" (not checked). */
export function cellOf(results: readonly Judged[]): string {
  if (results.length === 0) return '-';
  if (results.some((r) => !r.pass)) return 'FAIL';
  return results.every((r) => !r.check.expectReach) ? 'blocked' : 'ok';
}

function short(name: string, prefix: string): string {
  return name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** One matrix per family: rows are senders (pods, then nodes), columns the receiving pods and the outside host. */
export function renderMatrix(results: readonly Judged[], prefix: string, podOrder: readonly string[]): string {
  const lines: string[] = [];
  for (const f of [4, 6] as const) {
    const rs = results.filter((r) => r.check.family === f);
    if (rs.length === 0) continue;
    // planChecks emits pod senders before node senders, so first appearance is the row order.
    const rows = [...new Set(rs.map((r) => r.check.from))];
    const targets = new Set(rs.map((r) => r.check.to));
    const cols = [...podOrder.filter((p) => targets.has(p)), 'outside'];
    const head = ['from \\ to', ...cols.map((c) => short(c, prefix))];
    const table = [head];
    for (const row of rows) {
      table.push([short(row, prefix), ...cols.map((c) => (row === c ? '·' : cellOf(rs.filter((r) => r.check.from === row && r.check.to === c))))]);
    }
    const widths = head.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
    lines.push(`IPv${f}:`);
    for (const r of table) lines.push('  ' + r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
    lines.push('');
  }
  return lines.join('\n');
}

export function renderSummary(results: readonly Judged[]): string {
  const lines = countByCategory(results).map((c) => {
    const mark = c.passed === c.total ? 'ok  ' : 'FAIL';
    return `  ${mark} IPv${c.family} ${c.category.padEnd(28)} ${c.passed}/${c.total}${c.blocked ? ` (${c.blocked} expected blocked)` : ''}`;
  });
  const failures = results.filter((r) => !r.pass);
  if (failures.length) {
    lines.push('', 'failures:');
    for (const r of failures.slice(0, 40)) lines.push(`  ${r.why}`);
    if (failures.length > 40) lines.push(`  ... and ${failures.length - 40} more`);
  }
  return lines.join('\n');
}
