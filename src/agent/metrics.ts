// A small Prometheus registry: counters, gauges and histograms rendered in the text exposition format.
// Enough for the agent's handful of series; no dependency.

type Labels = Record<string, string>;

function key(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]!.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',');
}

interface Series {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

export class Counter implements Series {
  readonly type = 'counter';
  private readonly values = new Map<string, number>();
  private readonly labelsOf = new Map<string, Labels>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
    if (!this.labelsOf.has(k)) this.labelsOf.set(k, { ...labels });
  }
  get(labels: Labels = {}): number {
    return this.values.get(key(labels)) ?? 0;
  }
  /** The total over every series whose labels include `match` (sum({result: 'ok'}) over all commands). */
  sum(match: Labels): number {
    let n = 0;
    for (const [k, v] of this.values) {
      const labels = this.labelsOf.get(k) ?? {};
      if (Object.entries(match).every(([l, want]) => labels[l] === want)) n += v;
    }
    return n;
  }
  render(): string[] {
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

export class Gauge implements Series {
  readonly type = 'gauge';
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  set(value: number, labels: Labels = {}): void {
    this.values.set(key(labels), value);
  }
  get(labels: Labels = {}): number {
    return this.values.get(key(labels)) ?? 0;
  }
  render(): string[] {
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

export class Histogram implements Series {
  readonly type = 'histogram';
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.buckets.forEach((b, i) => {
      if (v <= b) this.counts[i]! += 1;
    });
    this.sum += v;
    this.count += 1;
  }
  render(): string[] {
    return [
      ...this.buckets.map((b, i) => `${this.name}_bucket{le="${b}"} ${this.counts[i]!}`),
      `${this.name}_bucket{le="+Inf"} ${this.count}`,
      `${this.name}_sum ${this.sum}`,
      `${this.name}_count ${this.count}`,
    ];
  }
}

export class Registry {
  private readonly series: Series[] = [];
  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }
  gauge(name: string, help: string): Gauge {
    return this.add(new Gauge(name, help));
  }
  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }
  render(): string {
    return this.series.map((s) => [`# HELP ${s.name} ${s.help}`, `# TYPE ${s.name} ${s.type}`, ...s.render()].join('\n')).join('\n') + '\n';
  }
  private add<T extends Series>(s: T): T {
    this.series.push(s);
    return s;
  }
}

/** The agent's series, in one place so docs/agent.md can list them. */
export function agentMetrics() {
  const r = new Registry();
  return {
    registry: r,
    ready: r.gauge('flatnet_ready', '1 when lease, CNI config, routes, masquerade rules and (where FORWARD drops) forward accept rules are in place'),
    storeUp: r.gauge('flatnet_store_up', '1 when the last store operation succeeded'),
    peers: r.gauge('flatnet_peers', 'peer nodes with a valid lease'),
    peersUnreachable: r.gauge('flatnet_peers_unreachable', 'peers this node cannot route to with its backend (e.g. host-gw across L3)'),
    routes: r.gauge('flatnet_routes_programmed', 'routes to peer pod subnets in the kernel under protocol 241'),
    neighbours: r.gauge('flatnet_vxlan_neighbours_programmed', 'VXLAN neighbour entries programmed'),
    fdb: r.gauge('flatnet_vxlan_fdb_programmed', 'VXLAN FDB entries programmed'),
    podMTU: r.gauge('flatnet_pod_mtu', 'MTU given to pods on this node'),
    reconciles: r.counter('flatnet_reconcile_total', 'full reconciles by result'),
    reconcilesSkipped: r.counter('flatnet_reconcile_skipped_total', 'watch-triggered reconciles that stopped after the listing: no lease changed but for its expiry'),
    reconcileSeconds: r.histogram('flatnet_reconcile_duration_seconds', 'duration of a full reconcile', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    changes: r.counter('flatnet_datapath_changes_total', 'kernel entries replaced or deleted by reconciles'),
    renewals: r.counter('flatnet_lease_renewals_total', 'lease renewals by result'),
    invalidLeases: r.counter('flatnet_invalid_leases_total', 'store records rejected (malformed, overlapping, conflicting)'),
    masqueradeApplies: r.counter('flatnet_masquerade_applies_total', 'times the nftables table was (re)applied'),
    forwardAcceptRules: r.gauge('flatnet_forward_accept_rules', 'flatnet accept rules in iptables FORWARD chains that drop by default (0 where none drops)'),
    forwardAcceptChanges: r.counter('flatnet_forward_accept_changes_total', 'flatnet accept rules added to or removed from iptables FORWARD chains, by op'),
    cniConfigWrites: r.counter('flatnet_cni_config_writes_total', 'times the conflist was (re)written'),
    etcdCredentialReloads: r.counter('flatnet_etcd_credential_reloads_total', 'times changed etcd credential files were read again, by result (applied, refused: the agent kept the ones in use)'),
    errors: r.counter('flatnet_errors_total', 'errors by kind'),
    cniCalls: r.counter('flatnet_cni_calls_total', 'plugin calls offered to the agent, by command and result (ok, error, declined: the plugin ran them itself)'),
    cniCallsInFlight: r.gauge('flatnet_cni_calls_in_flight', 'plugin calls the agent has accepted and not yet finished'),
    cniAddsUndone: r.counter('flatnet_cni_adds_undone_total', 'ADDs the agent served and then undid because the caller was gone before the answer'),
    cniCallSeconds: r.histogram('flatnet_cni_call_duration_seconds', 'time the agent spent on a plugin call it served', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5]),
  };
}
export type AgentMetrics = ReturnType<typeof agentMetrics>;
