// flatnetd's side of the plugin's fast path; native/launcher.c has the other side and the wire format.
//
// Why: a plugin call that starts Node pays ~60 ms of Node's start on this kind of machine, and the
// reference Go plugins ~40 ms of their own; the agent is already a warm Node process on the same node.
// So the plugin's launcher first offers the call here, and the agent runs the very bundle the caller
// is (the file named in the call, checked against the build id the launcher was built with) and sends
// back what the process would have printed. The plugin's logic is the same code either way.
//
// What keeps this safe:
// - The socket is /run/flatnet/cni-<inode of the agent's network namespace>.sock, mode 0600 in a 0700
//   directory: only root reaches it, and a call made in a node's namespace reaches that node's agent.
// - The agent serves only callers in its own mount namespace, so every path in the call (CNI_NETNS,
//   the IPAM dataDir, the plugin file) names the same file for both. Otherwise it declines and the
//   launcher starts Node as before: the plugin never depends on the agent.
// - Every call evaluates a fresh copy of the bundle (its compiled code is kept per build), so no module
//   state is shared between calls; the calls' own coordination is the one that already holds between
//   processes (reservations by link(2), the kernel's EEXIST).
// - Stopping closes the socket first (new calls fall back to Node at once) and waits for calls in flight.
// - A call's work is mostly synchronous (the netlink addon; a DEL waits ~20 ms in the kernel), so calls
//   start one per turn of the event loop: a burst never holds the agent's loop (health answers, lease
//   renewals, route changes) for longer than one call.
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, readlinkSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Script } from 'node:vm';
import { ADDON_FILE } from '../linux/native-addon.ts';
import type { Logger } from './log.ts';
import type { AgentMetrics } from './metrics.ts';

export const CNI_SOCKET_DIR = '/run/flatnet';
/** The launcher's limits: frame 1 fits its 256 KB buffer, the stdout of an answer its 4 MB one. */
export const MAX_FRAME = 256 * 1024;
export const MAX_STDOUT = 4 * 1024 * 1024;
/** A config with a large prevResult is still far below this. */
export const MAX_STDIN = 16 * 1024 * 1024;
/** A caller that stops sending mid-call is dropped after this. */
const IDLE_MS = 120_000;
const MAGIC = 'FNC1';
/** Plugin builds kept compiled; older ones are loaded again if a call still names them. */
const KEPT_BUILDS = 4;

/** "net:[4026531840]" -> the socket path for that namespace. */
export function cniSocketPath(netnsLink: string, dir = CNI_SOCKET_DIR): string {
  const m = /^net:\[(\d+)\]$/.exec(netnsLink);
  if (!m) throw new Error(`unexpected network namespace link "${netnsLink}"`);
  return `${dir}/cni-${m[1]}.sock`;
}

/**
 * Removes the socket an agent of the namespace at `netnsPath` left behind when it was killed (a stopped
 * agent removes its own), and the directory when that was the last. For tools that tear namespaces
 * down (the lab), once that namespace's agent is gone.
 */
export function removeStaleCniSocket(netnsPath: string, dir = CNI_SOCKET_DIR): void {
  let ino: number;
  try {
    ino = statSync(netnsPath).ino;
  } catch {
    return;
  }
  rmSync(cniSocketPath(`net:[${ino}]`, dir), { force: true });
  try {
    rmdirSync(dir);
  } catch {
    /* absent, or other agents' sockets are in it */
  }
}

export interface CallHeader {
  readonly buildId: string;
  readonly mountNs: string;
  readonly plugin: string;
  readonly env: Readonly<Record<string, string>>;
}

/** Frame 1's body (without its length) -> the call, or a reason it is not one. */
export function parseCallHeader(body: Buffer): CallHeader | string {
  const fields = body.toString('utf8').split('\0');
  if (fields.pop() !== '') return 'the last field is not NUL-terminated';
  const [magic, buildId, mountNs, plugin, ...envFields] = fields;
  if (magic !== MAGIC) return `not a flatnet plugin call (magic ${JSON.stringify(magic)})`;
  if (buildId === undefined || !/^[0-9a-f]{16}$/.test(buildId)) return 'malformed build id';
  if (mountNs === undefined || plugin === undefined || !plugin.startsWith('/')) return 'malformed caller fields';
  const env: Record<string, string> = {};
  for (const f of envFields) {
    const eq = f.indexOf('=');
    // execve allows entries without '='; getenv never finds them, so neither do we.
    if (eq > 0) env[f.slice(0, eq)] ??= f.slice(eq + 1);
  }
  return { buildId, mountNs, plugin, env };
}

/** The answer frame: u8 exit status, u32 length of stdout, stdout, stderr. */
export function encodeAnswer(exitCode: number, stdout: string, stderr: string): Buffer {
  const out = Buffer.from(stdout, 'utf8');
  const head = Buffer.alloc(5);
  head.writeUInt8(exitCode & 0xff, 0);
  head.writeUInt32LE(out.length, 1);
  return Buffer.concat([head, out, Buffer.from(stderr, 'utf8')]);
}

/** The bundle at the end of a native-layout plugin file (see scripts/cni-plugin.mjs), or undefined. */
export function bundleOf(file: Buffer): string | undefined {
  if (file.length < 10) return undefined;
  const trailer = file.toString('latin1', file.length - 10);
  if (!/^\d{10}$/.test(trailer)) return undefined;
  const start = Number(trailer);
  return start <= file.length - 10 ? file.toString('latin1', start, file.length - 10) : undefined;
}

export function buildIdOf(bundle: string): string {
  return createHash('sha256').update(bundle, 'latin1').digest('hex').slice(0, 16);
}

/**
 * Hands out turns of the event loop, one per `turn()`: each resolves in its own check phase, after the
 * loop has polled for I/O again. Without it, a burst of calls that became ready in one poll would run
 * back to back before the loop turns (100 concurrent served DELs held it for 2.1 s in the benchmark).
 */
export class TurnGate {
  private readonly waiting: (() => void)[] = [];
  private scheduled = false;

  turn(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    // An immediate set while immediates run waits for the next turn of the loop.
    setImmediate(() => {
      this.scheduled = false;
      // Resolving queues the call's continuation, which runs (to its first real wait) in this check
      // phase's microtasks, before the next immediate.
      this.waiting.shift()?.();
      this.schedule();
    });
  }
}

type Serve = (env: Readonly<Record<string, string>>, stdin: Buffer, addon?: unknown) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

/** One plugin build, compiled once: `instance()` evaluates a fresh copy of its modules. */
interface PluginBuild {
  instance(): Serve;
  readonly addon: unknown;
}

function loadBuild(plugin: string, buildId: string): PluginBuild | undefined {
  const bundle = bundleOf(readFileSync(plugin));
  // A file replaced since the caller was exec'd holds another build: the caller then runs its own.
  if (bundle === undefined || buildIdOf(bundle) !== buildId) return undefined;
  // The code cache the plugin saved beside itself (scripts/cni-plugin.mjs) spares the first call most
  // of the compiling; V8 checks that it belongs to this source and this Node, and ignores it otherwise.
  let cachedData: Buffer | undefined;
  for (const kind of ['full', 'add']) {
    try {
      cachedData = readFileSync(`${dirname(plugin)}/.flatnet-${buildId}.${kind}.cache`);
      break;
    } catch {
      /* not saved yet */
    }
  }
  const wrapper = new Script(bundle, { filename: plugin, ...(cachedData ? { cachedData } : {}) }).runInThisContext() as (...a: unknown[]) => void;
  const req = createRequire(plugin);
  let addon: unknown;
  try {
    const m = { exports: {} };
    process.dlopen(m, `${dirname(plugin)}/${ADDON_FILE}`);
    addon = m.exports;
  } catch {
    addon = undefined; // the bundle then finds one itself, or uses iproute2, as the process would
  }
  return {
    addon,
    instance: () => {
      const mod = { exports: {} as { serve?: Serve } };
      wrapper(mod.exports, req, mod, plugin, dirname(plugin));
      if (typeof mod.exports.serve !== 'function') throw new Error(`${plugin} has no serve()`);
      return mod.exports.serve;
    },
  };
}

/** The `max` most recently used values by key. `load` fills a miss; what it returns undefined is not kept. */
export class RecentCache<T> {
  private readonly values = new Map<string, T>();
  constructor(private readonly max: number) {}

  get(key: string, load: () => T | undefined): T | undefined {
    const kept = this.values.get(key);
    // Most recently used last, so the first in the map is the first to go.
    this.values.delete(key);
    const v = kept ?? load();
    if (v === undefined) return undefined;
    this.values.set(key, v);
    for (const old of this.values.keys()) {
      if (this.values.size <= this.max) break;
      this.values.delete(old);
    }
    return v;
  }

  delete(key: string): void {
    this.values.delete(key);
  }

  keys(): string[] {
    return [...this.values.keys()];
  }
}

/** What the agent has done with the plugin calls offered to it since it started (its /status). */
export interface CniCallTally {
  /** Served: the plugin's code answered with success (ok) or with a CNI error (error). */
  ok: number;
  error: number;
  /** Left to the plugin, which then ran them itself. */
  declined: number;
  /** ADDs served and undone because the caller was gone before the answer. */
  undone: number;
  inFlight: number;
}

export interface CniServerOptions {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly dir?: string;
}

export class CniServer {
  private server?: Server;
  private path?: string;
  // Each upgrade of the plugin brings a build; an agent that runs for months keeps the last few (a node
  // mid-upgrade has two) rather than the compiled code of every one it has ever served.
  private readonly builds = new RecentCache<PluginBuild>(KEPT_BUILDS);
  private readonly inFlight = new Set<Promise<void>>();
  private readonly turns = new TurnGate();
  private readonly mountNs = readlinkSync('/proc/self/ns/mnt');
  private stopping = false;

  constructor(private readonly opts: CniServerOptions) {}

  get socketPath(): string | undefined {
    return this.path;
  }

  /** Listens; false when another agent already serves this namespace (it keeps doing so). */
  async start(): Promise<boolean> {
    const dir = this.opts.dir ?? CNI_SOCKET_DIR;
    const path = cniSocketPath(readlinkSync('/proc/self/ns/net'), dir);
    if (await someoneListens(path)) {
      this.opts.log.warn('another agent serves plugin calls in this network namespace; not serving them here', { socket: path });
      return false;
    }
    // Half-open: the launcher ends its side after stdin, and the answer still has to go back.
    const server = createServer({ allowHalfOpen: true }, (s) => this.accept(s));
    for (let attempt = 1; ; attempt++) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
      // A socket file left by an agent that was killed: nobody listens on it any more.
      rmSync(path, { force: true });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(path, () => {
            server.off('error', reject);
            resolve();
          });
        });
        break;
      } catch (e) {
        // Another node's agent (the lab runs several on one host) removed the directory with its last
        // socket between our mkdir and listen: make it again.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw e;
      }
    }
    chmodSync(path, 0o600);
    this.server = server;
    this.path = path;
    this.opts.log.info('serving plugin calls', { socket: path });
    return true;
  }

  /** Stops taking calls (new ones fall back to Node at once), then waits for those in flight. */
  async stop(): Promise<void> {
    this.stopping = true;
    const server = this.server;
    if (server) {
      await new Promise<void>((r) => server.close(() => r()));
      if (this.path) {
        rmSync(this.path, { force: true });
        // The directory goes with the last agent's socket (rmdir refuses while another one is there).
        try {
          rmdirSync(dirname(this.path));
        } catch {
          /* another agent's socket is in it */
        }
      }
    }
    await Promise.allSettled([...this.inFlight]);
  }

  private accept(sock: Socket): void {
    const done = this.handle(sock).catch((e: unknown) => {
      this.opts.log.warn('plugin call failed in the agent', { error: e });
      sock.destroy();
    });
    this.inFlight.add(done);
    this.opts.metrics.cniCallsInFlight.set(this.inFlight.size);
    void done.finally(() => {
      this.inFlight.delete(done);
      this.opts.metrics.cniCallsInFlight.set(this.inFlight.size);
    });
  }

  private count(command: string, result: 'ok' | 'error' | 'declined'): void {
    this.opts.metrics.cniCalls.inc({ command: command || 'none', result });
  }

  /** The calls so far, for the agent's /status: its metrics, summed over commands. */
  calls(): CniCallTally {
    const m = this.opts.metrics;
    return {
      ok: m.cniCalls.sum({ result: 'ok' }),
      error: m.cniCalls.sum({ result: 'error' }),
      declined: m.cniCalls.sum({ result: 'declined' }),
      undone: m.cniAddsUndone.get(),
      inFlight: this.inFlight.size,
    };
  }

  private async handle(sock: Socket): Promise<void> {
    sock.setTimeout(IDLE_MS, () => sock.destroy());
    const reader = new FrameReader(sock);
    const lenBytes = await reader.read(4);
    const len = lenBytes?.readUInt32LE(0);
    if (len === undefined || len > MAX_FRAME) return void sock.destroy();
    const body = await reader.read(len);
    if (!body) return void sock.destroy();
    const call = parseCallHeader(body);
    if (typeof call === 'string') {
      this.opts.log.warn('refused a plugin call', { reason: call });
      return this.decline(sock, '');
    }
    const command = call.env['CNI_COMMAND'] ?? '';
    const t0 = performance.now();
    const ready = this.prepare(call);
    if (typeof ready === 'string') {
      // Rare where the agent is deployed as it should be, and the first thing to look at when calls are
      // slow: which calls run standalone, and why.
      this.opts.log.info('declined a plugin call; the plugin runs it itself', { command, reason: ready, container: call.env['CNI_CONTAINERID'] });
      return this.decline(sock, command);
    }
    const { build, serve } = ready;
    // The agent's own time: preparing, then serving; not the wait for the caller's stdin in between.
    const preparing = performance.now() - t0;
    sock.write('Y');
    const stdin = await reader.rest(MAX_STDIN);
    if (!stdin) return void sock.destroy();
    await this.turns.turn();
    const t1 = performance.now();
    const r = await serve(call.env, stdin, build.addon);
    this.opts.metrics.cniCallSeconds.observe((preparing + performance.now() - t1) / 1000);
    this.count(command, r.exitCode === 0 ? 'ok' : 'error');
    // An answer longer than the launcher takes (none is near it) is not delivered either.
    if (Buffer.byteLength(r.stdout) <= MAX_STDOUT && (await deliver(sock, encodeAnswer(r.exitCode, r.stdout, r.stderr)))) return;
    sock.destroy();
    // The caller is gone (killed, timed out): its runtime never learns of this pod's address, so an ADD
    // that succeeded is undone here rather than left for GC, as the runtime's own DEL would.
    if (command === 'ADD' && r.exitCode === 0) {
      await this.turns.turn();
      const undo = await build.instance()({ ...call.env, CNI_COMMAND: 'DEL' }, stdin, build.addon);
      this.opts.metrics.cniAddsUndone.inc();
      this.opts.log.warn('the caller of an ADD went away before its answer; undid it', { container: call.env['CNI_CONTAINERID'], delExit: undo.exitCode });
    }
  }

  private decline(sock: Socket, command: string): void {
    this.count(command, 'declined');
    sock.end('N');
  }

  /**
   * Everything that can fail before the call has started, done before the agent says yes: after a yes,
   * an ADD that fails can only be answered with "try again" (the launcher runs other verbs itself then),
   * and a runtime that retries would meet the same failure every time; before it, the plugin simply runs
   * the call itself.
   */
  private prepare(call: CallHeader): { build: PluginBuild; serve: Serve } | string {
    const reason = this.declineReason(call);
    if (reason !== undefined) return reason;
    const build = this.build(call.plugin, call.buildId);
    if (!build) return 'cannot load that build';
    try {
      return { build, serve: build.instance() };
    } catch (e) {
      this.builds.delete(call.buildId);
      this.opts.log.warn('cannot evaluate the plugin named by a call', { plugin: call.plugin, error: e });
      return 'cannot evaluate that build';
    }
  }

  private declineReason(call: CallHeader): string | undefined {
    if (this.stopping) return 'stopping';
    if (call.mountNs !== this.mountNs) return 'another mount namespace';
    // Knobs the plugin reads from its own process's environment, which in here is the agent's: a call
    // that sets them runs itself, so that they mean what they say.
    if (['FLATNET_NETLINK', 'FLATNET_NETLINK_ADDON'].some((k) => call.env[k] !== undefined)) return 'netlink settings in the environment';
    return undefined;
  }

  private build(plugin: string, buildId: string): PluginBuild | undefined {
    // Only a build that loaded is kept: a file mid-replacement may be right on the next call.
    return this.builds.get(buildId, () => {
      try {
        return loadBuild(plugin, buildId);
      } catch (e) {
        this.opts.log.warn('cannot load the plugin named by a call', { plugin, error: e });
        return undefined;
      }
    });
  }
}

/** Writes the answer and ends; false when the caller was gone before it had it all. */
function deliver(sock: Socket, answer: Buffer): Promise<boolean> {
  if (sock.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    sock.once('error', () => resolve(false));
    // end()'s callback also runs on failure, with the error (EPIPE: the caller is gone).
    sock.end(answer, (err?: Error | null) => resolve(!err));
  });
}

function someoneListens(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Reads exact lengths, then the rest to the end, from a socket. */
class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private wake?: () => void;

  constructor(sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    sock.on('end', end);
    sock.on('close', end);
    sock.on('error', end);
  }

  private next(): Promise<void> {
    return new Promise((r) => (this.wake = r));
  }

  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) {
      if (this.ended) return undefined;
      await this.next();
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async rest(max: number): Promise<Buffer | undefined> {
    while (!this.ended) {
      if (this.buf.length > max) return undefined;
      await this.next();
    }
    return this.buf.length > max ? undefined : this.buf;
  }
}
