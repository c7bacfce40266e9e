// Calls the built plugin (dist/cni/flatnet) exactly as a runtime does: env vars, config on stdin, result
// or error JSON on stdout. `node` is the namespace the plugin runs in (the node whose bridge it manages).
import { resolve } from 'node:path';
import { run } from '../../src/linux/run.ts';
import { type Entry, enterNs } from './netns.ts';

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
  /** How the call enters `node` (netns.ts: Entry); default `ip netns exec`. */
  readonly enter?: Entry;
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
  const r = await run(enterNs(o.node, ['env', '-i', ...envArgs, o.plugin ?? PLUGIN], o.enter), {
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
