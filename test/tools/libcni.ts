// Drives plugins through libcni (test/tools/libcni-client, Go, built from Debian's libcni source) the way
// containerd, CRI-O and podman do. The client is built once per checkout (build/ is gitignored) and rebuilt
// when its source is newer than the binary; every call runs inside the test's "node" namespace so bridges,
// sysctls and portmap's iptables rules land there and never in the root namespace.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { run, runOk } from '../../src/linux/run.ts';
import { CNI_PATH } from './cni.ts';
import { type Entry, enterNs } from './netns.ts';

const ROOT = resolve(import.meta.dirname, '../..');
export const CLIENT = resolve(ROOT, 'build/libcni-client');
const SOURCE = resolve(ROOT, 'test/tools/libcni-client/main.go');
/** Debian's golang-github-appc-cni-dev puts libcni here; GOPATH mode needs no network. */
const GOPATH = '/usr/share/gocode';

let built: Promise<string> | undefined;

/** Builds the client if missing or stale; a missing Go toolchain or libcni source is an error, not a skip. */
export function buildLibcniClient(): Promise<string> {
  built ??= (async () => {
    if (existsSync(CLIENT) && statSync(CLIENT).mtimeMs >= statSync(SOURCE).mtimeMs) return CLIENT;
    if (!existsSync(`${GOPATH}/src/github.com/containernetworking/cni/libcni`)) {
      throw new Error(`libcni source missing under ${GOPATH}: apt-get install -y golang-go golang-github-appc-cni-dev`);
    }
    await runOk(['go', 'build', '-o', CLIENT, './test/tools/libcni-client'], {
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH,
        // Keep Go's build cache inside the gitignored build/ so HOME does not matter (CI, sudo).
        GOCACHE: resolve(ROOT, 'build/go-cache'),
        GOFLAGS: '',
      },
    }).catch((e: unknown) => {
      built = undefined;
      throw e;
    });
    return CLIENT;
  })();
  return built;
}

export type LibcniCommand = 'add' | 'check' | 'del' | 'status' | 'gc' | 'validate' | 'version';

export interface LibcniOptions {
  /** Namespace the client (and so every plugin) runs in. */
  readonly node: string;
  /** A .conflist or .conf file; or confDir + net to load by name as runtimes do. */
  readonly conflist?: string;
  readonly confDir?: string;
  readonly net?: string;
  readonly cniPath?: string;
  readonly containerID?: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly cacheDir?: string;
  readonly capabilityArgs?: Record<string, unknown>;
  /** CNI_ARGS as K=V;K=V. */
  readonly args?: string;
  /** GC: the runtime's list of live attachments (absent = no list sent). */
  readonly validAttachments?: readonly { containerID: string; ifname: string }[];
  /** How the client enters `node` (netns.ts: Entry); default `ip netns exec`. */
  readonly enter?: Entry;
}

export interface LibcniResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly json?: Record<string, unknown>;
}

export async function libcni(command: LibcniCommand, o: LibcniOptions): Promise<LibcniResult> {
  const client = await buildLibcniClient();
  const argv = enterNs(o.node, [client, command, '-cni-path', o.cniPath ?? CNI_PATH], o.enter);
  if (o.conflist !== undefined) argv.push('-conflist', o.conflist);
  if (o.confDir !== undefined) argv.push('-confdir', o.confDir, '-net', o.net ?? '');
  if (o.containerID !== undefined) argv.push('-cid', o.containerID);
  // An explicit '' is containerd's second DEL: pass it through as an empty netns.
  if (o.netns !== undefined) argv.push(`-netns=${o.netns}`);
  if (o.ifname !== undefined) argv.push('-ifname', o.ifname);
  if (o.cacheDir !== undefined) argv.push('-cache-dir', o.cacheDir);
  if (o.capabilityArgs !== undefined) argv.push('-cap-args', JSON.stringify(o.capabilityArgs));
  if (o.args !== undefined) argv.push('-args', o.args);
  if (o.validAttachments !== undefined) argv.push('-valid', JSON.stringify(o.validAttachments));
  const r = await run(argv, { timeoutMs: 120_000 });
  let json: Record<string, unknown> | undefined;
  try {
    json = r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
  } catch {
    json = undefined;
  }
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, ...(json ? { json } : {}) };
}

/**
 * A TCP server inside namespace `ns` that answers every connection with `reply`. It runs until the
 * namespace's processes are killed (Scratch.cleanup does that) or `timeoutMs` passes.
 */
export function startTcpServer(ns: string, port: number, reply: string, timeoutMs = 120_000): void {
  const script = 'require("node:net").createServer((s) => s.end(process.argv[2])).listen(Number(process.argv[1]), "::")';
  // Not awaited: the promise settles when the server is killed.
  void run(['ip', 'netns', 'exec', ns, process.execPath, '-e', script, String(port), reply], { timeoutMs });
}

/** Connects from namespace `ns` to host:port and returns what the server sent, or throws. */
export async function tcpRequest(ns: string, host: string, port: number): Promise<string> {
  const script = [
    'const s = require("node:net").connect(Number(process.argv[2]), process.argv[1]);',
    'let d = ""; s.setTimeout(3000, () => { console.error("timeout"); process.exit(2); });',
    's.on("data", (b) => { d += b; }); s.on("end", () => { process.stdout.write(d); process.exit(0); });',
    's.on("error", (e) => { console.error(e.message); process.exit(1); });',
  ].join(' ');
  return (await runOk(['ip', 'netns', 'exec', ns, process.execPath, '-e', script, host, String(port)], { timeoutMs: 10_000 })).stdout;
}

/** Retries tcpRequest until it answers (a server just started) or `ms` passes. */
export async function waitTcp(ns: string, host: string, port: number, ms = 5000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await tcpRequest(ns, host, port);
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
