// Running the real plugin executable for the fault-injection suites: inside a node namespace (as callPlugin
// does), with an optional SIGKILL at a chosen instant after spawn, with raw bytes (NUL cannot be passed by
// Node's spawn, non-UTF-8 can only be passed as bytes: perl execs the plugin with them), and a way to wait
// until every process a killed plugin left running (its `ip`/`nsenter` children) has finished.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run, runOk } from '../../src/linux/run.ts';
import { CNI_PATH, PLUGIN } from './cni.ts';
import { type Entry, enterNs } from './netns.ts';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** True when our SIGKILL ended the process (not when it finished first). */
  readonly killed: boolean;
  readonly ms: number;
}

/** The environment a runtime passes, with `over` applied (undefined removes a variable). */
export function pluginEnv(over: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string | undefined> = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH, ...over };
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/**
 * Runs the plugin in `node` with exactly `env` and `stdin`. `killAfterMs` sends SIGKILL that many ms after
 * spawn (Node's spawn timeout; the process we spawn is `ip netns exec`, which execs env, which execs the
 * plugin, so the signal reaches whichever of them is running at that instant).
 */
export async function execPlugin(node: string, env: Record<string, string>, stdin: string, killAfterMs?: number, enter: Entry = 'ip-netns-exec'): Promise<ExecResult> {
  const t0 = performance.now();
  const r = await run(enterNs(node, ['env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), PLUGIN], enter), {
    input: stdin,
    ...(killAfterMs !== undefined ? { timeoutMs: Math.max(1, Math.round(killAfterMs)) } : {}),
  });
  const killed = killAfterMs !== undefined && r.stderr.includes('(killed by SIGKILL)');
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, killed, ms: performance.now() - t0 };
}

// perl, not a shell: it decodes hex arguments into raw bytes, so values Node would re-encode as UTF-8 reach
// the plugin byte for byte. argv: stdin file, then NAME hexvalue pairs, then "--" and the program.
const PERL_EXEC = [
  'my $in = shift @ARGV; my %e;',
  'while (@ARGV && $ARGV[0] ne "--") { my $k = shift @ARGV; $e{$k} = pack("H*", shift @ARGV); }',
  'shift @ARGV; %ENV = %e; open(STDIN, "<", $in) or die "stdin: $!"; exec { $ARGV[0] } @ARGV or die "exec: $!";',
].join(' ');

/** Like execPlugin, but env values and stdin are raw bytes (anything except NUL in env, which exec cannot carry). */
export async function execPluginBytes(node: string, env: Record<string, Buffer>, stdin: Buffer, tmpDir: string): Promise<ExecResult> {
  const file = join(tmpDir, `stdin-${process.pid}-${Math.random().toString(16).slice(2)}`);
  writeFileSync(file, stdin);
  const t0 = performance.now();
  try {
    const pairs = Object.entries(env).flatMap(([k, v]) => [k, v.toString('hex')]);
    const r = await run(['ip', 'netns', 'exec', node, 'perl', '-e', PERL_EXEC, file, ...pairs, '--', PLUGIN]);
    return { code: r.code, stdout: r.stdout, stderr: r.stderr, killed: false, ms: performance.now() - t0 };
  } finally {
    rmSync(file, { force: true });
  }
}

/**
 * Pids of processes whose environment holds the entry `needle` (e.g. "CNI_CONTAINERID=x"): a plugin and its
 * children. With `prefix`, any entry that starts with `needle` (every "CNI_CONTAINERID=crash-...").
 */
export function pidsWithEnv(needle: string, match: 'entry' | 'prefix' = 'entry'): number[] {
  const want = Buffer.from(match === 'entry' ? `${needle}\0` : needle);
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let env: Buffer;
    try {
      env = readFileSync(`/proc/${name}/environ`);
    } catch {
      continue; // gone, or a kernel thread
    }
    if (env.subarray(0, want.length).equals(want) || env.includes(Buffer.concat([Buffer.from('\0'), want]))) out.push(Number(name));
  }
  return out;
}

/** Waits until no process with `needle` in its environment is left (a killed plugin's orphans finish fast). */
export async function waitForNoProcesses(needle: string, timeoutMs = 20_000, match: 'entry' | 'prefix' = 'entry'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = pidsWithEnv(needle, match);
    if (pids.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes with ${needle} still running after ${timeoutMs} ms: ${pids.join(',')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Link names in a namespace. */
export async function linkNames(ns: string): Promise<string[]> {
  const out = (await runOk(['ip', '-n', ns, '-j', 'link', 'show'])).stdout;
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname);
}

export interface LinkState {
  readonly ifname: string;
  readonly flags: readonly string[];
  readonly master?: string;
  readonly kind?: string;
}

export async function linkStates(ns: string): Promise<LinkState[]> {
  const out = (await runOk(['ip', '-n', ns, '-j', '-d', 'link', 'show'])).stdout;
  return (JSON.parse(out) as { ifname: string; flags: string[]; master?: string; linkinfo?: { info_kind?: string } }[]).map((l) => ({
    ifname: l.ifname,
    flags: l.flags,
    ...(l.master !== undefined ? { master: l.master } : {}),
    ...(l.linkinfo?.info_kind !== undefined ? { kind: l.linkinfo.info_kind } : {}),
  }));
}

/** IPv4 addresses ("a.b.c.d/len") on `dev` in `ns`; [] when the link does not exist. */
export async function addrsOf(ns: string, dev: string): Promise<string[]> {
  const r = await run(['ip', '-n', ns, '-j', '-4', 'addr', 'show', 'dev', dev]);
  if (r.code !== 0) return [];
  return (JSON.parse(r.stdout) as { addr_info: { local: string; prefixlen: number }[] }[]).flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`));
}

export interface StoreState {
  /** ip -> "containerID\r\nifname" */
  readonly reservations: Map<string, string>;
  readonly tempFiles: string[];
  /** Owner index entries (.flatnet-owner-<key>-<ip>) -> their content (a hard link of the reservation). */
  readonly indexFiles: Map<string, string>;
}

/** What the disk store holds for `network`: reservation files (named by an IPv4/IPv6 address) and temp files. */
export function storeState(dataDir: string, network: string): StoreState {
  const dir = join(dataDir, network);
  const reservations = new Map<string, string>();
  const tempFiles: string[] = [];
  const indexFiles = new Map<string, string>();
  if (!existsSync(dir)) return { reservations, tempFiles, indexFiles };
  for (const f of readdirSync(dir)) {
    if (f.startsWith('.flatnet-tmp-')) tempFiles.push(f);
    else if (f.startsWith('.flatnet-owner-')) indexFiles.set(f, readFileSync(join(dir, f), 'utf8'));
    else if (/^\d+\.\d+\.\d+\.\d+$/.test(f) || (f.includes(':') && /^[0-9a-f:]+$/i.test(f))) reservations.set(f, readFileSync(join(dir, f), 'utf8'));
  }
  return { reservations, tempFiles, indexFiles };
}

/** Everything in the store directory (files of any kind), for "nothing was created" checks. */
export function storeFiles(dataDir: string): string[] {
  if (!existsSync(dataDir)) return [];
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        walk(join(d, e.name), r);
      } else out.push(r);
    }
  };
  walk(dataDir, '');
  return out.sort();
}
