// The handle a root test or benchmark keeps on test/tools/cni-server-host.ts: flatnetd's plugin-call
// server, run on its own in a node namespace (entered with nsenter, so it shares the caller's mount
// namespace, as the agent must to serve calls).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

const HOST_SCRIPT = resolve(import.meta.dirname, 'cni-server-host.ts');

/** The server in `node`'s network namespace (and the test's mount namespace), as a node's agent runs. */
export class ServerHost {
  private readonly lines: string[] = [];
  private waiters: (() => void)[] = [];
  readonly child: ChildProcess;
  socket = '';

  /** `mountNsOf`: run in that process's mount namespace (a runtime with one of its own, as the test's containerd). */
  constructor(node: string, o: { mountNsOf?: number } = {}) {
    // Entering a mount namespace, nsenter starts the program in "/": --wd makes it the checkout's root,
    // where `--import tsx` is found.
    const mount = o.mountNsOf !== undefined ? [`--mount=/proc/${o.mountNsOf}/ns/mnt`, `--wd=${resolve(import.meta.dirname, '../..')}`] : [];
    this.child = spawn('nsenter', [`--net=/run/netns/${node}`, ...mount, '--', process.execPath, '--import', 'tsx', HOST_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  private async nextLine(prefix: string, from: number): Promise<string> {
    for (;;) {
      const hit = this.lines.slice(from).find((l) => l.startsWith(prefix));
      if (hit !== undefined) return hit;
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), new Promise((_, rej) => setTimeout(() => rej(new Error(`no "${prefix}" line from the server`)), 15_000))]);
    }
  }

  async ready(): Promise<void> {
    this.socket = (await this.nextLine('listening ', 0)).slice('listening '.length);
  }

  async metrics(): Promise<Record<string, number>> {
    return (await this.sample()).series;
  }

  /** The call metrics, and the longest the server's event loop was held since the previous sample (ms). */
  async sample(): Promise<{ series: Record<string, number>; loopDelayMaxMs: number }> {
    const from = this.lines.length;
    this.child.kill('SIGUSR1');
    const m = /^metrics (\{.*\}) loop ([\d.]+)$/.exec(await this.nextLine('metrics ', from));
    if (!m) throw new Error('malformed metrics line from the server');
    return { series: JSON.parse(m[1]!) as Record<string, number>, loopDelayMaxMs: Number(m[2]) };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

/** Prometheus text (an agent's /metrics) -> {"<name>{<labels>}": value}, for the series `keep` matches. */
export function seriesOf(text: string, keep: RegExp = /^/): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m && keep.test(m[1]!)) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** The server served every call it was offered, none declined or failed: `adds` ADDs, at least `minDels` DELs. */
export function assertAllServed(m: Readonly<Record<string, number>>, adds: number, minDels: number): void {
  assert.equal(calls(m, 'ADD', 'ok'), adds, `${adds} ADD(s) served`);
  assert.ok(calls(m, 'DEL', 'ok') >= minDels, `at least ${minDels} DEL(s) served`);
  assert.equal(calls(m, undefined, 'declined') + calls(m, undefined, 'error'), 0, 'nothing declined or failed');
}

/**
 * The server's `flatnet_cni_calls_total` from a metrics() answer, summed over what is not given:
 * calls(m, 'ADD', 'ok'), calls(m, undefined, 'declined'), calls(m) for every call offered.
 */
export function calls(m: Readonly<Record<string, number>>, command?: string, result?: string): number {
  let n = 0;
  for (const [k, v] of Object.entries(m)) {
    const c = /^flatnet_cni_calls_total\{command="([^"]*)",result="([^"]*)"\}$/.exec(k);
    if (c && (command === undefined || c[1] === command) && (result === undefined || c[2] === result)) n += v;
  }
  return n;
}
