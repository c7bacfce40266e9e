// Calls the built plugin (dist/cni/flatnet) exactly as a runtime does: env vars, config on stdin, result
// or error JSON on stdout. `node` is the namespace the plugin runs in (the node whose bridge it manages).
import { resolve } from 'node:path';
import { run } from '../../src/linux/run.ts';

export const PLUGIN_DIR = resolve(import.meta.dirname, '../../dist/cni');
export const PLUGIN = resolve(PLUGIN_DIR, 'flatnet');
export const CNI_PATH = `${PLUGIN_DIR}:/usr/lib/cni`;

export interface CallOptions {
  readonly node: string;
  readonly command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';
  readonly config: unknown;
  readonly containerID?: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly args?: string;
  readonly env?: Record<string, string>;
  /** Raw stdin instead of JSON.stringify(config). */
  readonly stdin?: string;
  readonly plugin?: string;
  /**
   * How the call enters `node`: `ip netns exec` (the default) also gives it a mount namespace of its
   * own, so a flatnetd there never serves it; `nsenter --net` keeps the caller's, as a runtime's call
   * made in the agent's mount namespace does (src/agent/cni-server.ts).
   */
  readonly enter?: 'ip-netns-exec' | 'nsenter';
}

export interface CallResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed as JSON, when it is JSON. */
  readonly json?: Record<string, unknown>;
}

export async function callPlugin(o: CallOptions): Promise<CallResult> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: o.command,
    CNI_CONTAINERID: o.containerID ?? '',
    CNI_NETNS: o.netns ?? '',
    CNI_IFNAME: o.ifname ?? (o.command === 'GC' || o.command === 'STATUS' ? '' : 'eth0'),
    CNI_ARGS: o.args ?? '',
    CNI_PATH,
    ...o.env,
  };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const enter = o.enter === 'nsenter' ? ['nsenter', `--net=${netnsPath(o.node)}`, '--'] : ['ip', 'netns', 'exec', o.node];
  const r = await run([...enter, 'env', '-i', ...envArgs, o.plugin ?? PLUGIN], {
    input: o.stdin ?? JSON.stringify(o.config),
  });
  let json: Record<string, unknown> | undefined;
  try {
    json = r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
  } catch {
    json = undefined;
  }
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, ...(json ? { json } : {}) };
}

/** The netns path a runtime would pass for namespace `name`. */
export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}
