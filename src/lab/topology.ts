// The lab's topology as pure data: which namespaces exist, what each is called, which underlay segment a
// node sits on and which addresses it gets. Everything that builds, verifies, traces or tears the lab
// down asks this file, so a name or an address is decided in exactly one place.
//
//   fabric ns (<prefix>fabric): bridge fab0 = 172.29.0.1/24, fd00:172:29::1/64 (and, routed, fab1 =
//   172.29.1.1/24, fd00:172:29:1::1/64); it routes between its bridges and towards the outside host.
//   node k (<prefix>nk): eth0 on segment (k odd or flat: fab0, else fab1), 172.29.<seg>.(10+k).
//   outside (<prefix>out): 203.0.113.10/24, 2001:db8:ff::10/64; the fabric's end has .1 / ::1.
//   pod j of node k: netns <prefix>nk-pj.
import type { EtcdTLSFiles } from '../agent/options.ts';
import { pkiFiles } from './pki-files.ts';

export type Backend = 'host-gw' | 'vxlan';
/** kubernetes: the lab's STAND-IN API server (src/lab/kube-apiserver-standin.ts), not a real one. */
export type StoreKind = 'embedded' | 'etcd' | 'kubernetes';
export type TopologyKind = 'flat' | 'routed';

export interface LabOptions {
  readonly nodes: number;
  readonly pods: number;
  readonly backend: Backend;
  readonly store: StoreKind;
  readonly ipv6: boolean;
  readonly topology: TopologyKind;
  readonly prefix: string;
  readonly root: string;
  /** The agents' --resync in seconds (default 5); tests use shorter periods to stay bounded. */
  readonly resyncSeconds?: number;
  /** The agents' --lease-ttl in seconds (default 30). */
  readonly leaseTtlSeconds?: number;
}

export const DEFAULT_AGENT_RESYNC_S = 5;
export const DEFAULT_AGENT_LEASE_TTL_S = 30;

export const DEFAULT_PREFIX = 'fnl-';
export const DEFAULT_ROOT = '/run/flatnet-lab';
export const CLUSTER_CIDR_V4 = '10.244.0.0/16';
export const CLUSTER_CIDR_V6 = 'fd00:10:244::/56';
export const NODE_PREFIX_V4 = 24;
export const NODE_PREFIX_V6 = 64;
export const BRIDGE = 'flat0';
export const VXLAN_DEVICE = 'flat.vx';
export const UPLINK = 'eth0';
export const POD_IFNAME = 'eth0';
export const NETWORK_NAME = 'flatnet';
export const ETCD_PORT = 2379;
export const KUBE_API_PORT = 6443;
/** Most nodes one segment can number (172.29.x.11 .. .254). */
export const MAX_NODES = 200;
export const MAX_PODS_PER_NODE = 50;

export class LabOptionsError extends Error {
  override readonly name = 'LabOptionsError';
}

/** An underlay segment: one bridge in the fabric namespace. */
export interface Segment {
  readonly index: number;
  readonly bridge: string;
  readonly gatewayV4: string;
  readonly gatewayV6: string;
  readonly cidrV4: string;
  readonly cidrV6: string;
}

export interface NodePlan {
  /** The agent's node name ("n1"). */
  readonly name: string;
  readonly index: number;
  readonly netns: string;
  readonly segment: Segment;
  /** Underlay addresses (no prefix length): IPv4 always, IPv6 when the lab is dual-stack. */
  readonly underlayIPs: readonly string[];
  /** The fabric-side end of this node's uplink veth. */
  readonly fabricPort: string;
}

export interface OutsidePlan {
  readonly netns: string;
  readonly ips: readonly string[];
  /** The fabric's addresses on the link to the outside host. */
  readonly fabricIPs: readonly string[];
  readonly fabricPort: string;
  readonly cidrV4: string;
  readonly cidrV6: string;
}

export interface FabricPlan {
  readonly netns: string;
  readonly segments: readonly Segment[];
}

const PREFIX_RE = /^[a-z][a-z0-9]{0,7}-$/;

/** A prefix is short (interface and namespace names stay readable), lower-case and ends with "-". */
export function validatePrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new LabOptionsError(`--prefix "${prefix}" must be 2-9 characters: a letter, letters or digits, then "-" (like "fnl-")`);
  }
}

export function validateOptions(o: LabOptions): void {
  validatePrefix(o.prefix);
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > MAX_NODES) throw new LabOptionsError(`--nodes must be 1..${MAX_NODES}, got ${o.nodes}`);
  if (!Number.isInteger(o.pods) || o.pods < 0 || o.pods > MAX_PODS_PER_NODE) throw new LabOptionsError(`--pods must be 0..${MAX_PODS_PER_NODE}, got ${o.pods}`);
  if (!o.root.startsWith('/') || o.root === '/' || o.root.split('/').includes('..')) {
    throw new LabOptionsError(`--root must be an absolute directory other than "/", got "${o.root}"`);
  }
  // The agent's own limits (src/agent/options.ts): --resync 1..3600, --lease-ttl 3..86400.
  if (o.resyncSeconds !== undefined && (!Number.isInteger(o.resyncSeconds) || o.resyncSeconds < 1 || o.resyncSeconds > 3600)) {
    throw new LabOptionsError(`agent resync must be 1..3600 s, got ${o.resyncSeconds}`);
  }
  if (o.leaseTtlSeconds !== undefined && (!Number.isInteger(o.leaseTtlSeconds) || o.leaseTtlSeconds < 3 || o.leaseTtlSeconds > 86400)) {
    throw new LabOptionsError(`agent lease TTL must be 3..86400 s, got ${o.leaseTtlSeconds}`);
  }
}

export function segment(index: number): Segment {
  return {
    index,
    bridge: `fab${index}`,
    gatewayV4: `172.29.${index}.1`,
    gatewayV6: index === 0 ? 'fd00:172:29::1' : `fd00:172:29:${index}::1`,
    cidrV4: `172.29.${index}.0/24`,
    cidrV6: index === 0 ? 'fd00:172:29::/64' : `fd00:172:29:${index}::/64`,
  };
}

export function segmentsOf(topology: TopologyKind): Segment[] {
  return topology === 'routed' ? [segment(0), segment(1)] : [segment(0)];
}

/** Routed: odd nodes on fab0, even nodes on fab1, so neighbours by number sit on different segments. */
export function segmentOfNode(index: number, topology: TopologyKind): Segment {
  return segment(topology === 'routed' && index % 2 === 0 ? 1 : 0);
}

export function nodeName(index: number): string {
  return `n${index}`;
}

/** "n3" -> 3; undefined for anything else. */
export function nodeIndexOf(name: string): number | undefined {
  const m = /^n([1-9][0-9]{0,3})$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export function planNode(index: number, o: Pick<LabOptions, 'prefix' | 'topology' | 'ipv6'>): NodePlan {
  if (!Number.isInteger(index) || index < 1 || index > MAX_NODES) throw new LabOptionsError(`node number must be 1..${MAX_NODES}, got ${index}`);
  const seg = segmentOfNode(index, o.topology);
  const host = 10 + index;
  const v6 = seg.index === 0 ? `fd00:172:29::${host}` : `fd00:172:29:${seg.index}::${host}`;
  return {
    name: nodeName(index),
    index,
    netns: `${o.prefix}${nodeName(index)}`,
    segment: seg,
    underlayIPs: o.ipv6 ? [`172.29.${seg.index}.${host}`, v6] : [`172.29.${seg.index}.${host}`],
    fabricPort: `fab-${nodeName(index)}`,
  };
}

export function planFabric(o: Pick<LabOptions, 'prefix' | 'topology'>): FabricPlan {
  return { netns: `${o.prefix}fabric`, segments: segmentsOf(o.topology) };
}

export function planOutside(o: Pick<LabOptions, 'prefix' | 'ipv6'>): OutsidePlan {
  return {
    netns: `${o.prefix}out`,
    ips: o.ipv6 ? ['203.0.113.10', '2001:db8:ff::10'] : ['203.0.113.10'],
    fabricIPs: o.ipv6 ? ['203.0.113.1', '2001:db8:ff::1'] : ['203.0.113.1'],
    fabricPort: 'out0',
    cidrV4: '203.0.113.0/24',
    cidrV6: '2001:db8:ff::/64',
  };
}

export function podNetns(prefix: string, node: string, suffix: string): string {
  return `${prefix}${node}-${suffix}`;
}

const POD_SUFFIX = /^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$/;

/**
 * The pod name (= its namespace name) for `add-pod NODE [NAME]`: NAME may be a bare suffix ("web") or the
 * full name ("fnl-n1-web"); without NAME the first free "p<k>".
 */
export function choosePodName(prefix: string, node: string, existing: readonly string[], requested?: string): string {
  const head = `${prefix}${node}-`;
  if (requested !== undefined) {
    const suffix = requested.startsWith(head) ? requested.slice(head.length) : requested;
    if (!POD_SUFFIX.test(suffix)) throw new LabOptionsError(`pod name "${requested}": use lower-case letters, digits and "-" (at most 20)`);
    const name = head + suffix;
    if (existing.includes(name)) throw new LabOptionsError(`pod ${name} already exists`);
    return name;
  }
  for (let k = 1; ; k++) {
    const name = `${head}p${k}`;
    if (!existing.includes(name)) return name;
  }
}

/** The lowest node number not in use (add-node fills gaps left by remove-node). */
export function nextNodeIndex(used: readonly number[]): number {
  for (let k = 1; ; k++) if (!used.includes(k)) return k;
}

export function clusterCIDRs(ipv6: boolean): string[] {
  return ipv6 ? [CLUSTER_CIDR_V4, CLUSTER_CIDR_V6] : [CLUSTER_CIDR_V4];
}

/**
 * Where etcd listens: the fabric's first address, reachable from every node on any segment. Over TLS, and
 * only for clients with a certificate the lab's CA signed, as production etcd runs.
 */
export function etcdEndpoint(): string {
  return `https://${etcdAddress()}:${ETCD_PORT}`;
}

export function etcdAddress(): string {
  return segment(0).gatewayV4;
}

/** The lab's etcd PKI (src/lab/pki.ts): its CA, etcd's server certificate, a client certificate per node. */
export function etcdPkiDir(root: string): string {
  return `${root}/etcd-pki`;
}

/** The client certificate etcdctl uses in the lab (and in tests that write into the lab's etcd). */
export const ETCDCTL_CLIENT = 'lab-admin';

/** The files a lab client `name` (a node, or ETCDCTL_CLIENT) presents to the lab's etcd: the CA, its certificate and key. */
export function etcdClientTLS(root: string, name: string): Required<EtcdTLSFiles> {
  const dir = etcdPkiDir(root);
  const c = pkiFiles.client(dir, name);
  return { caFile: pkiFiles.ca(dir).cert, certFile: c.cert, keyFile: c.key };
}

/** etcdctl's argv up to its command, with the lab's endpoint, CA and admin client certificate. */
export function etcdctlArgs(root: string): string[] {
  const t = etcdClientTLS(root, ETCDCTL_CLIENT);
  return ['etcdctl', '--endpoints', etcdEndpoint(), '--cacert', t.caFile, '--cert', t.certFile, '--key', t.keyFile];
}

/** Where the stand-in API server listens: beside etcd, on the fabric's first address. */
export function kubeApiEndpoint(): string {
  return `http://${segment(0).gatewayV4}:${KUBE_API_PORT}`;
}

/** The bearer token the stand-in API server requires and the agents send (0600, under the lab root). */
export function kubeTokenFile(root: string): string {
  return `${root}/kube-token`;
}

/** Per-node files under the lab root. */
export interface NodePaths {
  readonly dir: string;
  readonly cniConfDir: string;
  readonly ipamDataDir: string;
  readonly cniCacheDir: string;
  readonly socket: string;
  readonly log: string;
}

export function nodePaths(root: string, node: string): NodePaths {
  const dir = `${root}/${node}`;
  return {
    dir,
    cniConfDir: `${dir}/net.d`,
    ipamDataDir: `${dir}/ipam`,
    cniCacheDir: `${dir}/cni-cache`,
    socket: `${dir}/agent.sock`,
    log: `${dir}/flatnetd.log`,
  };
}

/** The shared embedded store: one directory all agents of the lab use (they share this machine's disk). */
export function storeDir(root: string): string {
  return `${root}/store`;
}

export function etcdDataDir(root: string): string {
  return `${root}/etcd`;
}

/** flatnetd's argv after the executable, per the agent's command-line contract. */
export function agentArgs(node: NodePlan, o: LabOptions): string[] {
  const p = nodePaths(o.root, node.name);
  const args = ['--node', node.name];
  for (const c of clusterCIDRs(o.ipv6)) args.push('--cluster-cidr', c);
  args.push('--node-prefix-v4', String(NODE_PREFIX_V4));
  if (o.ipv6) args.push('--node-prefix-v6', String(NODE_PREFIX_V6));
  args.push('--backend', o.backend);
  if (o.store === 'embedded') args.push('--store', 'embedded', '--store-dir', storeDir(o.root));
  else if (o.store === 'etcd') {
    const t = etcdClientTLS(o.root, node.name);
    args.push('--store', 'etcd', '--etcd-endpoints', etcdEndpoint(), '--etcd-cafile', t.caFile, '--etcd-certfile', t.certFile, '--etcd-keyfile', t.keyFile);
  }
  else args.push('--store', 'kubernetes', '--kube-api', kubeApiEndpoint(), '--kube-token-file', kubeTokenFile(o.root));
  args.push(
    '--uplink', UPLINK,
    '--cni-conf-dir', p.cniConfDir,
    '--ipam-data-dir', p.ipamDataDir,
    '--listen', `unix:${p.socket}`,
    '--resync', String(o.resyncSeconds ?? DEFAULT_AGENT_RESYNC_S),
    '--lease-ttl', String(o.leaseTtlSeconds ?? DEFAULT_AGENT_LEASE_TTL_S),
    '--log-format', 'json',
  );
  return args;
}

/** host-gw needs peers on the same L2 segment; VXLAN only needs them routable. */
export function expectReachable(backend: Backend, a: NodePlan, b: NodePlan): boolean {
  return a.index === b.index || backend === 'vxlan' || a.segment.index === b.segment.index;
}
