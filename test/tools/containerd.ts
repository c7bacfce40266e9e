// containerd 1.6 (Debian's) as a test runtime: a private containerd whose CRI plugin calls our plugin, an
// offline pause image, and a minimal CRI v1 client (gRPC, definitions in cri-runtime-v1.proto).
//
// containerd runs inside a "node" network namespace (nsenter --net, so runc still sees the cgroup mounts that
// `ip netns exec` would hide by remounting /sys) AND in a mount namespace of its own (unshare --mount,
// slave propagation) with a tmpfs over /run: containerd 1.6's shims put their sockets in the hard-coded
// /run/containerd/s, which must not be the host's, and every mount containerd makes (sandbox rootfs, /dev/shm,
// the pods' netns bind mounts under its state dir) exists only in that mount namespace and disappears with
// its last process, so a failed test cannot leave one behind on the host. Files stay visible on the host
// (same filesystem), so the test still sees the pods' netns files appear and go; it enters a pod's network
// namespace through /proc/<pause pid>/ns/net.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { run, runOk, spawnDetached } from '../../src/linux/run.ts';
import { busyboxRootfsTar } from './rootfs.ts';

export const PAUSE_IMAGE = 'localhost/fnt-cri-pause:1';
const PROTO = resolve(import.meta.dirname, 'cri-runtime-v1.proto');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** Pids whose command line contains `needle` (as one argument). */
export function pidsWithArg(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(needle)) out.push(Number(p));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * A one-layer OCI image archive whose command sleeps forever (the sandbox "pause" process): busybox-static
 * plus the two applets it needs. Returns the archive's path (for `ctr images import`).
 */
export async function buildPauseImage(dir: string): Promise<string> {
  const rootfs = join(dir, 'rootfs');
  const layout = join(dir, 'oci');
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  await busyboxRootfsTar(rootfs, join(dir, 'layer.tar'), ['sh', 'sleep']);
  const blob = (data: Buffer, mediaType: string) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(layout, 'blobs/sha256', hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layer = blob(readFileSync(join(dir, 'layer.tar')), 'application/vnd.oci.image.layer.v1.tar');
  const config = blob(Buffer.from(JSON.stringify({
    architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sleep', 'inf'] },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })), 'application/vnd.oci.image.config.v1+json');
  const manifest = blob(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] })), 'application/vnd.oci.image.manifest.v1+json');
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'io.containerd.image.name': PAUSE_IMAGE } }] }));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const archive = join(dir, 'pause-oci.tar');
  await runOk(['tar', '-C', layout, '-cf', archive, '.']);
  return archive;
}

export interface ContainerdOptions {
  /** Private directory: root/, state/, runc/, opt/ and the log go here. */
  readonly dir: string;
  /** Network namespace (name under /run/netns) containerd and so the plugin run in. */
  readonly nodeNs: string;
  /** CNI bin_dir (ONE directory: the plugin, its addon, and loopback, which containerd always adds). */
  readonly binDir: string;
  readonly confDir: string;
}

const q = (s: string) => JSON.stringify(s); // TOML basic strings accept JSON's escapes

/** containerd 1.6 config (version 2) that touches nothing of the system's containerd. */
export function containerdConfig(o: ContainerdOptions): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = ${q(join(o.dir, 'root'))}`,
    `state = ${q(join(o.dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = ${q(join(o.dir, 'state/containerd.sock'))}`,
    '[ttrpc]',
    `  address = ${q(join(o.dir, 'state/containerd.sock.ttrpc'))}`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(o.dir, 'opt'))}`,
    `[${cri}]`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    '  restrict_oom_score_adj = true', // else runc: "can't get final child's PID from pipe"
    '  netns_mounts_under_state_dir = true', // the pods' netns under state/, not /var/run/netns
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    `[${cri}.cni]`,
    `  bin_dir = ${q(o.binDir)}`,
    `  conf_dir = ${q(o.confDir)}`,
    '  max_conf_num = 1',
    `[${cri}.containerd]`,
    '  snapshotter = "native"', // plain copies: works on any filesystem /tmp may be (overlay on overlay does not)
    '  default_runtime_name = "runc"',
    `[${cri}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"', // a runtime table without it fails "container.Runtime.Name must be set"
    `[${cri}.containerd.runtimes.runc.options]`,
    `  Root = ${q(join(o.dir, 'runc'))}`, // runc state (default /run/containerd/runc)
    '  SystemdCgroup = false',
    '',
  ].join('\n');
}

export class Containerd {
  private constructor(
    readonly pid: number,
    readonly socket: string,
    readonly logFile: string,
  ) {}

  /** Writes the config, starts containerd in the node namespace and waits (up to timeoutMs) for its socket. */
  static async start(o: ContainerdOptions, timeoutMs = 20_000): Promise<Containerd> {
    for (const d of ['root', 'state', 'runc', 'opt']) mkdirSync(join(o.dir, d), { recursive: true });
    const config = join(o.dir, 'containerd.toml');
    writeFileSync(config, containerdConfig(o));
    const logFile = join(o.dir, 'containerd.log');
    // nsenter and unshare exec (no fork), and so does sh: the pid we get is containerd's.
    const pid = spawnDetached([
      'nsenter', `--net=/run/netns/${o.nodeNs}`, '--',
      'unshare', '--mount', '--propagation', 'slave', '--',
      'sh', '-c', 'mount -t tmpfs -o size=4m,mode=755 fnt-cri-run /run && exec containerd --config "$0"', config,
    ], { logFile });
    if (pid === undefined) throw new Error('containerd did not start');
    const c = new Containerd(pid, join(o.dir, 'state/containerd.sock'), logFile);
    const until = Date.now() + timeoutMs;
    while (!existsSync(c.socket) || !/msg="containerd successfully booted/.test(c.log())) {
      if (!alive(pid)) throw new Error(`containerd exited: ${c.log().slice(-2000)}`);
      if (Date.now() > until) throw new Error(`containerd not up after ${timeoutMs} ms: ${c.log().slice(-2000)}`);
      await sleep(100);
    }
    return c;
  }

  log(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  /** `ctr` against this containerd, in the CRI's namespace (k8s.io). */
  ctr(args: readonly string[], timeoutMs = 60_000) {
    return run(['ctr', '--address', this.socket, '--namespace', 'k8s.io', ...args], { timeoutMs });
  }

  /** The runc shims this containerd started (they outlive it when it is killed). */
  shims(): number[] {
    return pidsWithArg(this.socket).filter((p) => p !== this.pid);
  }

  /** SIGTERM, then SIGKILL after graceMs; then SIGKILL to any shim it left. */
  async stop(graceMs = 10_000): Promise<void> {
    kill(this.pid, 'SIGTERM');
    const until = Date.now() + graceMs;
    while (alive(this.pid) && Date.now() < until) await sleep(50);
    kill(this.pid, 'SIGKILL');
    for (const p of this.shims()) kill(p, 'SIGKILL');
  }
}

/** cgroup directories named `parent` (an absolute cgroup path) in every mounted hierarchy (v1 and v2). */
function cgroupDirs(parent: string): string[] {
  const base = '/sys/fs/cgroup';
  const roots = [base, ...readdirSync(base).map((d) => join(base, d))];
  return roots.map((r) => join(r, parent)).filter((d) => existsSync(d) && statSync(d).isDirectory());
}

function cgroupTree(dir: string): string[] {
  const subs = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
  return [...subs.flatMap(cgroupTree), dir]; // children first
}

/** Kills (SIGKILL) every process in cgroup `parent` and below, then removes those cgroups. */
export async function removeCgroup(parent: string): Promise<void> {
  for (const dir of cgroupDirs(parent)) {
    for (const d of cgroupTree(dir)) {
      for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) kill(Number(p), 'SIGKILL');
    }
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    let left = 0;
    for (const dir of cgroupDirs(parent)) {
      for (const d of cgroupTree(dir)) {
        try {
          rmdirSync(d);
        } catch {
          left++;
        }
      }
    }
    if (left === 0) return;
    await sleep(100);
  }
}

// ---- CRI v1 client -------------------------------------------------------------------------------------------

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: { network?: string; pid?: string; ipc?: string } } };
}

export interface PodSandboxStatusResponse {
  status: {
    id: string;
    state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
    network: { ip: string; additionalIps: { ip: string }[] } | null;
    metadata: { name: string; uid: string; namespace: string; attempt: number };
  };
  info: Record<string, string>;
}

/** What containerd 1.6 puts in PodSandboxStatus's verbose `info` key (the fields we read). */
export interface SandboxInfo {
  pid: number;
  netNamespaceClosed: boolean;
  runtimeSpec: { linux: { namespaces: { type: string; path?: string }[]; cgroupsPath?: string } };
}

type Unary = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

/** runtime.v1.RuntimeService over containerd's unix socket; every call has a deadline. */
export class CriClient {
  private readonly client: grpc.Client;

  constructor(socket: string) {
    const def = loadSync(PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    this.client = new pkg.runtime.v1.RuntimeService(`unix://${socket}`, grpc.credentials.createInsecure());
  }

  call<T>(method: 'Version' | 'RunPodSandbox' | 'StopPodSandbox' | 'RemovePodSandbox' | 'PodSandboxStatus', req: object, timeoutMs = 60_000): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method]!.bind(this.client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  version() {
    return this.call<{ version: string; runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }>('Version', { version: 'v1' });
  }

  async runPodSandbox(config: PodSandboxConfig, timeoutMs?: number): Promise<string> {
    return (await this.call<{ podSandboxId: string }>('RunPodSandbox', { config }, timeoutMs)).podSandboxId;
  }

  async stopPodSandbox(id: string, timeoutMs?: number): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id }, timeoutMs);
  }

  async removePodSandbox(id: string, timeoutMs?: number): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id }, timeoutMs);
  }

  async podSandboxStatus(id: string, timeoutMs?: number): Promise<PodSandboxStatusResponse & { parsedInfo: SandboxInfo }> {
    const r = await this.call<PodSandboxStatusResponse>('PodSandboxStatus', { podSandboxId: id, verbose: true }, timeoutMs);
    return { ...r, parsedInfo: JSON.parse(r.info['info'] ?? '{}') as SandboxInfo };
  }

  close(): void {
    this.client.close();
  }
}
