// flatnetd's command line, parsed and validated without side effects: a bad flag is refused at start with
// a message naming it, before the agent touches the kernel or the store.
import { parseArgs } from 'node:util';
import { isNetwork, tryParseIP, tryParsePrefix, formatPrefix, overlaps } from '../net/ip.ts';
import type { BackendType } from '../store/types.ts';

export interface AgentOptions {
  readonly node: string;
  readonly clusterCIDRs: readonly string[];
  readonly nodePrefix: { readonly 4: number; readonly 6: number };
  readonly backend: BackendType;
  readonly store:
    | { readonly kind: 'embedded'; readonly dir: string }
    | {
        readonly kind: 'etcd';
        readonly endpoints: readonly string[];
        readonly cluster: string;
        /** PEM files for https endpoints (read at start by src/agent/etcd-credentials.ts). */
        readonly tls?: EtcdTLSFiles;
        /** etcd's role-based auth; the password is read from a file, never taken from the command line. */
        readonly auth?: { readonly username: string; readonly passwordFile: string };
      }
    | { readonly kind: 'kubernetes'; readonly server: string; readonly tokenFile?: string; readonly caFile?: string };
  readonly uplink?: string;
  readonly underlayIP?: string;
  readonly cniConfDir: string;
  readonly cniConfName: string;
  readonly networkName: string;
  readonly ipamDataDir: string;
  readonly portmap: boolean;
  /** "127.0.0.1:9642", "[::1]:9642" or "unix:/path". */
  readonly listen: string;
  readonly resyncMs: number;
  readonly leaseTtlMs: number;
  readonly reuseGraceMs: number;
  readonly logFormat: 'json' | 'text';
  readonly vxlanTxChecksumOffload: 'auto' | 'on' | 'off';
  /** Serve the plugin's calls in the agent (src/agent/cni-server.ts); default on. */
  readonly serveCni?: boolean;
}

export interface EtcdTLSFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

export class OptionsError extends Error {
  override readonly name = 'OptionsError';
}

export const USAGE = `flatnetd: the flatnet node agent

  --node NAME                  this node's name (default: the hostname)
  --cluster-cidr CIDR          cluster pod CIDR, once per family (default 10.244.0.0/16)
  --node-prefix-v4 N           size of each node's IPv4 pod subnet (default 24)
  --node-prefix-v6 N           size of each node's IPv6 pod subnet (default 64)
  --backend host-gw|vxlan      how nodes reach each other's pods (default host-gw)
  --store embedded|etcd|kubernetes
                               lease store (default embedded)
  --store-dir DIR              embedded store directory (default /var/lib/flatnet/store)
  --etcd-endpoints URL[,URL]   etcd client URLs (store etcd)
  --cluster-name NAME          etcd key prefix /flatnet/<name>/ (default "default")
  --etcd-cafile FILE           CA bundle that signed etcd's certificate (https endpoints; default: the system's)
  --etcd-certfile FILE         client certificate for an etcd that checks clients (with --etcd-keyfile)
  --etcd-keyfile FILE          its private key
  --etcd-username NAME         etcd user (role-based auth; with --etcd-password-file)
  --etcd-password-file FILE    file holding that user's password
  --kube-api URL               API server (store kubernetes; default: in-cluster, from
                               KUBERNETES_SERVICE_HOST/PORT, with the service account's token and CA)
  --kube-token-file FILE       bearer token file, read on every call (default in-cluster: the service account's)
  --kube-ca-file FILE          CA bundle for an https API server (default in-cluster: the service account's)
  --uplink IFNAME              underlay device (default: the one holding the default route)
  --underlay-ip IP             address peers reach this node at (default: the uplink's first global address)
  --cni-conf-dir DIR           where the conflist goes (default /etc/cni/net.d)
  --cni-conf-name FILE         its file name (default 10-flatnet.conflist)
  --network-name NAME          CNI network name (default flatnet)
  --ipam-data-dir DIR          plugin reservation directory (default /var/lib/cni/networks)
  --portmap                    chain the reference portmap plugin (hostPort)
  --listen ADDR                health/metrics: HOST:PORT or unix:/path (default 127.0.0.1:9642)
  --resync SECONDS             full resync period (default 10)
  --lease-ttl SECONDS          subnet lease TTL, renewed every third of it (default 60; with store
                               kubernetes the Node is the lease and a renewal only checks it)
  --log-format json|text       (default json)
  --vxlan-tx-csum auto|on|off  tx checksum offload on flat.vx; auto = off only on kernels before 5.7,
                               which corrupt SNATed VXLAN checksums (flannel#1279) (default auto)
  --serve-cni on|off           run the plugin's calls in this process when the plugin offers them
                               (socket /run/flatnet/cni-<netns inode>.sock; off: every call starts
                               Node) (default on)
`;

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/;

function positiveInt(v: string | undefined, flag: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) throw new OptionsError(`${flag} must be an integer from ${min} to ${max}, got "${v}"`);
  return Number(v);
}

/** Where the kubelet puts a pod's service account token (rotated) and the cluster CA. */
const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Where the Kubernetes API is: --kube-api, else in-cluster (the service's host and port from the environment
 * the kubelet gives every pod, and the service account's token and CA, as client-go's in-cluster config).
 */
function kubeStoreOptions(api: string | undefined, tokenFile: string | undefined, caFile: string | undefined, env: Readonly<Record<string, string | undefined>>): AgentOptions['store'] {
  let server = api;
  if (server === undefined) {
    const host = env['KUBERNETES_SERVICE_HOST'];
    const port = env['KUBERNETES_SERVICE_PORT'];
    if (!host || !port) throw new OptionsError('--store kubernetes needs --kube-api, or KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (in a pod)');
    server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
    tokenFile ??= `${SERVICE_ACCOUNT}/token`;
    caFile ??= `${SERVICE_ACCOUNT}/ca.crt`;
  }
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new OptionsError(`--kube-api "${server}" is not a URL`);
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '' || url.username !== '') {
    throw new OptionsError(`--kube-api "${server}" must be an http(s) URL without query, fragment or credentials`);
  }
  return {
    kind: 'kubernetes',
    server,
    ...(tokenFile !== undefined ? { tokenFile: absolute(tokenFile, '--kube-token-file') } : {}),
    ...(caFile !== undefined ? { caFile: absolute(caFile, '--kube-ca-file') } : {}),
  };
}

/** --store etcd: endpoints of one scheme, and TLS files or auth only where they can apply, in pairs where they go in pairs. */
function etcdStoreOptions(v: Readonly<Record<string, string | boolean | string[] | undefined>>): AgentOptions['store'] {
  const text = (flag: string): string | undefined => {
    const x = v[flag];
    return typeof x === 'string' ? x : undefined;
  };
  const endpoints = (text('etcd-endpoints') ?? '').split(',').filter(Boolean);
  if (endpoints.length === 0) throw new OptionsError('--store etcd needs --etcd-endpoints');
  for (const e of endpoints) if (!/^https?:\/\/[^\s/]+$/.test(e)) throw new OptionsError(`--etcd-endpoints: "${e}" is not an http(s) URL`);
  const https = endpoints.filter((e) => e.startsWith('https://')).length;
  if (https !== 0 && https !== endpoints.length) throw new OptionsError('--etcd-endpoints: all http or all https, not a mix');
  const tlsFlags = ['etcd-cafile', 'etcd-certfile', 'etcd-keyfile'].filter((f) => text(f) !== undefined);
  if (tlsFlags.length > 0 && https === 0) throw new OptionsError(`--${tlsFlags[0] ?? ''} needs https --etcd-endpoints`);
  if ((text('etcd-certfile') === undefined) !== (text('etcd-keyfile') === undefined)) {
    throw new OptionsError('--etcd-certfile and --etcd-keyfile go together');
  }
  const username = text('etcd-username');
  const passwordFile = text('etcd-password-file');
  if ((username === undefined) !== (passwordFile === undefined)) throw new OptionsError('--etcd-username and --etcd-password-file go together');
  if (username !== undefined && !/^[\x21-\x7e]{1,128}$/.test(username)) throw new OptionsError(`--etcd-username "${username}" must be 1-128 printable ASCII characters without spaces`);
  const file = (flag: string): string | undefined => {
    const x = text(flag);
    return x === undefined ? undefined : absolute(x, `--${flag}`);
  };
  const caFile = file('etcd-cafile');
  const certFile = file('etcd-certfile');
  const keyFile = file('etcd-keyfile');
  const tls: EtcdTLSFiles = { ...(caFile ? { caFile } : {}), ...(certFile ? { certFile } : {}), ...(keyFile ? { keyFile } : {}) };
  return {
    kind: 'etcd',
    endpoints,
    cluster: text('cluster-name') ?? 'default',
    ...(tlsFlags.length > 0 ? { tls } : {}),
    ...(username !== undefined && passwordFile !== undefined ? { auth: { username, passwordFile: absolute(passwordFile, '--etcd-password-file') } } : {}),
  };
}

export function parseAgentOptions(argv: readonly string[], hostname: string, env: Readonly<Record<string, string | undefined>> = {}): AgentOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        node: { type: 'string' },
        'cluster-cidr': { type: 'string', multiple: true },
        'node-prefix-v4': { type: 'string' },
        'node-prefix-v6': { type: 'string' },
        backend: { type: 'string' },
        store: { type: 'string' },
        'store-dir': { type: 'string' },
        'etcd-endpoints': { type: 'string' },
        'cluster-name': { type: 'string' },
        'etcd-cafile': { type: 'string' },
        'etcd-certfile': { type: 'string' },
        'etcd-keyfile': { type: 'string' },
        'etcd-username': { type: 'string' },
        'etcd-password-file': { type: 'string' },
        'kube-api': { type: 'string' },
        'kube-token-file': { type: 'string' },
        'kube-ca-file': { type: 'string' },
        uplink: { type: 'string' },
        'underlay-ip': { type: 'string' },
        'cni-conf-dir': { type: 'string' },
        'cni-conf-name': { type: 'string' },
        'network-name': { type: 'string' },
        'ipam-data-dir': { type: 'string' },
        portmap: { type: 'boolean' },
        listen: { type: 'string' },
        resync: { type: 'string' },
        'lease-ttl': { type: 'string' },
        'log-format': { type: 'string' },
        'vxlan-tx-csum': { type: 'string' },
        'serve-cni': { type: 'string' },
      },
    });
  } catch (e) {
    throw new OptionsError((e as Error).message);
  }
  const v = parsed.values;
  const node = v.node ?? hostname.toLowerCase();
  if (!NODE_NAME.test(node)) throw new OptionsError(`--node "${node}" is not a valid node name (lower-case letters, digits, "-" and ".")`);

  const clusterCIDRs = (v['cluster-cidr'] ?? ['10.244.0.0/16']).map((c) => {
    const p = tryParsePrefix(c);
    if (!p || !isNetwork(p)) throw new OptionsError(`--cluster-cidr "${c}" is not a network CIDR`);
    return formatPrefix(p);
  });
  const fams = clusterCIDRs.map((c) => (c.includes(':') ? 6 : 4));
  if (new Set(fams).size !== fams.length) throw new OptionsError('--cluster-cidr: at most one CIDR per address family');
  const nodePrefix = {
    4: positiveInt(v['node-prefix-v4'], '--node-prefix-v4', 24, 8, 30),
    6: positiveInt(v['node-prefix-v6'], '--node-prefix-v6', 64, 48, 120),
  } as const;
  for (const c of clusterCIDRs) {
    const p = tryParsePrefix(c)!;
    const want = nodePrefix[p.ip.family];
    if (want < p.length) throw new OptionsError(`node subnets /${want} do not fit in --cluster-cidr ${c}`);
  }
  const backend = v.backend ?? 'host-gw';
  if (backend !== 'host-gw' && backend !== 'vxlan') throw new OptionsError(`--backend must be host-gw or vxlan, got "${backend}"`);

  const storeKind = v.store ?? 'embedded';
  let store: AgentOptions['store'];
  if (storeKind === 'embedded') {
    store = { kind: 'embedded', dir: absolute(v['store-dir'] ?? '/var/lib/flatnet/store', '--store-dir') };
  } else if (storeKind === 'etcd') {
    store = etcdStoreOptions(v);
  } else if (storeKind === 'kubernetes') {
    store = kubeStoreOptions(v['kube-api'], v['kube-token-file'], v['kube-ca-file'], env);
  } else {
    throw new OptionsError(`--store must be embedded, etcd or kubernetes, got "${storeKind}"`);
  }
  if (v['underlay-ip'] !== undefined && !tryParseIP(v['underlay-ip'])) throw new OptionsError(`--underlay-ip "${v['underlay-ip']}" is not an IP address`);
  if (v.uplink !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$/.test(v.uplink)) throw new OptionsError(`--uplink "${v.uplink}" is not an interface name`);
  const listen = v.listen ?? '127.0.0.1:9642';
  parseListen(listen);
  const serveCni = v['serve-cni'] ?? 'on';
  if (serveCni !== 'on' && serveCni !== 'off') throw new OptionsError('--serve-cni must be on or off');
  const logFormat = v['log-format'] ?? 'json';
  if (logFormat !== 'json' && logFormat !== 'text') throw new OptionsError('--log-format must be json or text');
  const csum = v['vxlan-tx-csum'] ?? 'auto';
  if (csum !== 'auto' && csum !== 'on' && csum !== 'off') throw new OptionsError('--vxlan-tx-csum must be auto, on or off');
  const networkName = v['network-name'] ?? 'flatnet';
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(networkName)) throw new OptionsError(`--network-name "${networkName}" has invalid characters`);
  const cniConfName = v['cni-conf-name'] ?? '10-flatnet.conflist';
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*\.conflist$/.test(cniConfName)) throw new OptionsError('--cni-conf-name must be a plain file name ending in .conflist');
  const resyncMs = positiveInt(v.resync, '--resync', 10, 1, 3600) * 1000;
  const leaseTtlMs = positiveInt(v['lease-ttl'], '--lease-ttl', 60, 3, 86400) * 1000;
  return {
    node,
    clusterCIDRs,
    nodePrefix,
    backend,
    store,
    ...(v.uplink !== undefined ? { uplink: v.uplink } : {}),
    ...(v['underlay-ip'] !== undefined ? { underlayIP: v['underlay-ip'] } : {}),
    cniConfDir: absolute(v['cni-conf-dir'] ?? '/etc/cni/net.d', '--cni-conf-dir'),
    cniConfName,
    networkName,
    ipamDataDir: absolute(v['ipam-data-dir'] ?? '/var/lib/cni/networks', '--ipam-data-dir'),
    portmap: v.portmap ?? false,
    listen,
    resyncMs,
    leaseTtlMs,
    // A dead node's subnet is reused only after every agent has resynced twice (and so withdrawn its routes).
    reuseGraceMs: Math.max(2 * resyncMs + 5000, 30_000),
    logFormat,
    vxlanTxChecksumOffload: csum,
    serveCni: serveCni === 'on',
  };
}

function absolute(p: string, flag: string): string {
  if (!p.startsWith('/') || p.includes('\0') || p.split('/').includes('..')) throw new OptionsError(`${flag} must be an absolute path without ".."`);
  return p;
}

export type ListenAddress = { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

export function parseListen(text: string): ListenAddress {
  if (text.startsWith('unix:')) return { kind: 'unix', path: absolute(text.slice(5), '--listen unix:') };
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  if (!m || host === undefined || !tryParseIP(host) || Number(m[3]) > 65535) throw new OptionsError(`--listen "${text}" must be HOST:PORT ([v6]:PORT) or unix:/path`);
  return { kind: 'tcp', host, port: Number(m[3]) };
}

/** Overlap between cluster CIDRs and the underlay would make pod routes shadow node addresses. */
export function overlapsUnderlay(clusterCIDRs: readonly string[], underlayCIDRs: readonly string[]): string | undefined {
  for (const c of clusterCIDRs) {
    for (const u of underlayCIDRs) {
      const a = tryParsePrefix(c);
      const b = tryParsePrefix(u);
      if (a && b && overlaps(a, b)) return `cluster CIDR ${c} overlaps the underlay network ${u}`;
    }
  }
  return undefined;
}
