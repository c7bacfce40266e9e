// Throwaway network namespaces for root tests. Every name starts with "fnt-" and a random part, and
// `Scratch.cleanup()` removes everything it made (namespaces, host links, directories) even when the test
// failed half-way. Use it with `after(() => scratch.cleanup())`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inNetns, run, runOk } from '../../src/linux/run.ts';

export function shortId(): string {
  return randomBytes(3).toString('hex');
}

export class Scratch {
  readonly id = shortId();
  private readonly namespaces: string[] = [];
  private readonly dirs: string[] = [];
  private readonly pids: number[] = [];

  /** Creates namespace `fnt-<id>-<suffix>` with lo up; returns its name. */
  async netns(suffix: string): Promise<string> {
    const name = `fnt-${this.id}-${suffix}`;
    await runOk(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await runOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  tempDir(label = 'dir'): string {
    const d = mkdtempSync(join(tmpdir(), `fnt-${this.id}-${label}-`));
    this.dirs.push(d);
    return d;
  }

  /** Registers a process started by the test so cleanup ends it (by pid, SIGKILL). */
  trackPid(pid: number | undefined): void {
    if (pid !== undefined) this.pids.push(pid);
  }

  async cleanup(): Promise<void> {
    for (const pid of this.pids.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const ns of this.namespaces.splice(0).reverse()) {
      // Kill anything still running inside (test servers), then delete the namespace.
      const pids = await run(['ip', 'netns', 'pids', ns]);
      for (const p of pids.stdout.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await run(['ip', 'netns', 'del', ns]);
    }
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * How a command enters a node's network namespace: `ip netns exec` also gives it a mount namespace of its
 * own, so a flatnetd there never serves its plugin calls; `nsenter --net` keeps the caller's, as a
 * runtime's call made in the agent's mount namespace does (src/agent/cni-server.ts).
 */
export type Entry = 'ip-netns-exec' | 'nsenter';

/** argv that runs `argv` inside namespace `ns`, entered as `entry` says. */
export function enterNs(ns: string, argv: readonly string[], entry: Entry = 'ip-netns-exec'): string[] {
  return entry === 'nsenter' ? inNetns(ns, argv) : ['ip', 'netns', 'exec', ns, ...argv];
}

/** Runs argv inside namespace `ns` (by name) and returns stdout; throws on failure. */
export async function inNs(ns: string, argv: readonly string[]): Promise<string> {
  return (await runOk(['ip', 'netns', 'exec', ns, ...argv])).stdout;
}

/**
 * True when `ping` from `ns` to `addr` gets an answer to any of `count` (default 3) echoes 0.2 s apart: a
 * new pod's anti-spoofing entries land a few ms after ADD returns, and its first ARP may be in flight.
 */
export async function canPing(ns: string, addr: string, opts: { size?: number; count?: number; from?: string } = {}): Promise<boolean> {
  const argv = ['ip', 'netns', 'exec', ns, 'ping', '-c', String(opts.count ?? 3), '-i', '0.2', '-W', '1', '-q'];
  if (opts.size !== undefined) argv.push('-s', String(opts.size), '-M', 'do');
  if (opts.from !== undefined) argv.push('-I', opts.from);
  argv.push(addr);
  return (await run(argv)).code === 0;
}
