// Diff desired datapath state against what the kernel has, into an ordered plan.
//
// Level-triggered: the plan is computed from the full desired state and the full kernel state each
// time, so routes of nodes that left while the agent was down are deleted simply because they are
// no longer desired (flannel #2554). Only labelled entries are ever deleted: routes with protocol
// 241 in the main table, and permanent neighbour/FDB entries on flatnet's own VXLAN device. A
// desired route whose prefix is already held by a route of another protocol is not installed
// (`ip route replace` would overwrite it) and is reported as a conflict instead.
//
// Order: route deletes, FDB deletes, neighbour deletes, then neighbour, FDB and route replaces.
// Deletions therefore never leave a route pointing at a missing neighbour, and additions put the
// neighbour and FDB entry in place before the route that uses them (no ARP on the overlay).
import { bitsOf } from '../net/ip.ts';
import { ROUTE_PROTO, isOurRoute } from './desired.ts';
import type {
  ActualState,
  DesiredFdb,
  DesiredNeighbour,
  DesiredRoute,
  DesiredState,
  KernelFdb,
  KernelNeighbour,
  KernelRoute,
} from './desired.ts';

export type PlanStep =
  | { readonly op: 'delete'; readonly kind: 'route'; readonly route: KernelRoute }
  | { readonly op: 'delete'; readonly kind: 'fdb'; readonly fdb: KernelFdb }
  | { readonly op: 'delete'; readonly kind: 'neigh'; readonly neigh: KernelNeighbour }
  | { readonly op: 'replace'; readonly kind: 'neigh'; readonly neigh: DesiredNeighbour }
  | { readonly op: 'replace'; readonly kind: 'fdb'; readonly fdb: DesiredFdb }
  | { readonly op: 'replace'; readonly kind: 'route'; readonly route: DesiredRoute };

export interface RouteConflict {
  readonly route: DesiredRoute;
  /** The foreign route holding the prefix. */
  readonly holder: KernelRoute;
}

export interface Plan {
  readonly steps: readonly PlanStep[];
  readonly conflicts: readonly RouteConflict[];
}

/** Default metric `ip route replace` uses when none is given: 0 for IPv4, 1024 for IPv6. */
function defaultMetric(family: 4 | 6): number {
  return family === 4 ? 0 : 1024;
}

function routeMatches(want: DesiredRoute, have: KernelRoute): boolean {
  return (
    have.gateway === want.gateway &&
    have.dev === want.dev &&
    have.onlink === want.onlink &&
    (have.metric ?? defaultMetric(want.family)) === defaultMetric(want.family)
  );
}

const NONE: readonly KernelRoute[] = [];

export function planSync(desired: DesiredState, actual: ActualState): Plan {
  const routeDeletes: PlanStep[] = [];
  const routeReplaces: PlanStep[] = [];
  const conflicts: RouteConflict[] = [];

  // Keyed by the canonical destination alone: IPv4 and IPv6 prefixes never print alike (no key strings to
  // build for 5,000 routes on every reconcile).
  const ours = new Map<string, KernelRoute[]>();
  const foreign = new Map<string, KernelRoute>();
  for (const r of actual.routes) {
    const k = r.dst;
    if (isOurRoute(r)) {
      const list = ours.get(k);
      if (list) list.push(r);
      else ours.set(k, [r]);
    } else if (!foreign.has(k)) foreign.set(k, r);
  }
  const wanted = new Set<string>();
  for (const want of desired.routes) {
    const k = want.dst;
    const holder = foreign.get(k);
    if (holder) {
      conflicts.push({ route: want, holder });
      continue;
    }
    wanted.add(k);
    const have = ours.get(k) ?? NONE;
    const keep = have.find((h) => routeMatches(want, h));
    // Entries at another metric would survive a replace (it matches on prefix + metric): delete them.
    for (const h of have) {
      if (h !== keep && (h.metric ?? defaultMetric(h.family)) !== defaultMetric(h.family)) {
        routeDeletes.push({ op: 'delete', kind: 'route', route: h });
      }
    }
    if (!keep) {
      // IPv6 validates an onlink gateway against the routing table: the old route to the same
      // prefix via another device (a backend switch) makes the replace fail, so it goes first.
      for (const h of have) {
        if (want.family === 6 && h.dev !== want.dev && !routeDeletes.some((d) => d.kind === 'route' && d.route === h)) {
          routeDeletes.push({ op: 'delete', kind: 'route', route: h });
        }
      }
      routeReplaces.push({ op: 'replace', kind: 'route', route: want });
    }
  }
  for (const [k, have] of ours) {
    if (wanted.has(k)) continue;
    for (const h of have) routeDeletes.push({ op: 'delete', kind: 'route', route: h });
  }

  const neighDeletes: PlanStep[] = [];
  const neighReplaces: PlanStep[] = [];
  const haveNeigh = new Map<string, KernelNeighbour>();
  for (const n of actual.neighbours) haveNeigh.set(`${n.dev} ${n.ip}`, n);
  const wantNeigh = new Set<string>();
  for (const want of desired.neighbours) {
    const k = `${want.dev} ${want.ip}`;
    wantNeigh.add(k);
    const have = haveNeigh.get(k);
    if (!have || !have.permanent || have.mac !== want.mac) neighReplaces.push({ op: 'replace', kind: 'neigh', neigh: want });
  }
  for (const [k, have] of haveNeigh) {
    // Dynamic entries on the device are the kernel's own (and expire); only permanent ones are ours.
    if (!wantNeigh.has(k) && have.permanent) neighDeletes.push({ op: 'delete', kind: 'neigh', neigh: have });
  }

  const fdbDeletes: PlanStep[] = [];
  const fdbReplaces: PlanStep[] = [];
  const haveFdb = actual.fdb.filter((f) => f.dst !== undefined && f.permanent);
  const wantFdb = new Set(desired.fdb.map((f) => `${f.dev} ${f.mac} ${f.dst}`));
  const rewritten = new Set<KernelFdb>();
  for (const want of desired.fdb) {
    const same = haveFdb.filter((h) => h.dev === want.dev && h.mac === want.mac);
    if (same.some((h) => h.dst === want.dst)) continue;
    // `bridge fdb replace` rewrites the single existing remote in place (no gap in forwarding).
    const only = same.length === 1 ? same[0] : undefined;
    if (only) rewritten.add(only);
    fdbReplaces.push({ op: 'replace', kind: 'fdb', fdb: want });
  }
  for (const h of haveFdb) {
    if (!wantFdb.has(`${h.dev} ${h.mac} ${h.dst}`) && !rewritten.has(h)) fdbDeletes.push({ op: 'delete', kind: 'fdb', fdb: h });
  }

  return {
    steps: [...routeDeletes, ...fdbDeletes, ...neighDeletes, ...neighReplaces, ...fdbReplaces, ...routeReplaces],
    conflicts,
  };
}

export interface PlanCounts {
  readonly replaced: number;
  readonly deleted: number;
}

export function countPlan(plan: Plan): PlanCounts {
  let replaced = 0;
  let deleted = 0;
  for (const s of plan.steps) {
    if (s.op === 'replace') replaced++;
    else deleted++;
  }
  return { replaced, deleted };
}

/** One `ip -batch` or `bridge -batch` invocation. */
export interface CommandBatch {
  readonly tool: 'ip' | 'bridge';
  readonly lines: readonly string[];
}

function hostPrefix(dst: string, family: 4 | 6): string {
  return dst.includes('/') ? dst : `${dst}/${bitsOf(family)}`;
}

function renderStep(s: PlanStep): string {
  switch (s.kind) {
    case 'route': {
      if (s.op === 'replace') {
        const r = s.route;
        return `route replace ${r.dst} via ${r.gateway} dev ${r.dev}${r.onlink ? ' onlink' : ''} proto ${ROUTE_PROTO}`;
      }
      const r = s.route;
      // Naming the protocol makes the kernel delete only a route carrying our label.
      const parts = [`route del ${hostPrefix(r.dst, r.family)}`];
      if (r.gateway !== undefined) parts.push(`via ${r.gateway}`);
      if (r.dev !== undefined) parts.push(`dev ${r.dev}`);
      parts.push(`proto ${r.protocol}`);
      if (r.metric !== undefined) parts.push(`metric ${r.metric}`);
      return parts.join(' ');
    }
    case 'neigh':
      return s.op === 'replace'
        ? `neigh replace ${s.neigh.ip} lladdr ${s.neigh.mac} dev ${s.neigh.dev} nud permanent`
        : `neigh del ${s.neigh.ip} dev ${s.neigh.dev}`;
    case 'fdb':
      return s.op === 'replace'
        ? `fdb replace ${s.fdb.mac} dev ${s.fdb.dev} dst ${s.fdb.dst} self permanent`
        : `fdb del ${s.fdb.mac} dev ${s.fdb.dev}${s.fdb.dst !== undefined ? ` dst ${s.fdb.dst}` : ''} self`;
  }
}

/**
 * The plan as at most three batches (ip, bridge, ip): [route deletes + neighbour replaces],
 * [FDB deletes + FDB replaces], [neighbour deletes + route replaces]. That keeps every ordering
 * constraint of the plan while spawning as few processes as possible; empty batches are dropped
 * and neighbouring ip batches merged, so host-gw (routes only) always needs a single process.
 */
export function renderBatches(plan: Plan): CommandBatch[] {
  const first: string[] = [];
  const middle: string[] = [];
  const last: string[] = [];
  for (const s of plan.steps) {
    if (s.kind === 'fdb') middle.push(renderStep(s));
    else if ((s.kind === 'route' && s.op === 'delete') || (s.kind === 'neigh' && s.op === 'replace')) first.push(renderStep(s));
    else last.push(renderStep(s));
  }
  const batches: CommandBatch[] = [];
  const push = (tool: 'ip' | 'bridge', lines: string[]): void => {
    if (lines.length === 0) return;
    const prev = batches[batches.length - 1];
    if (prev && prev.tool === tool) batches[batches.length - 1] = { tool, lines: [...prev.lines, ...lines] };
    else batches.push({ tool, lines });
  };
  push('ip', first);
  push('bridge', middle);
  push('ip', last);
  return batches;
}
