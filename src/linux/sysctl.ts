// Network sysctls. /proc/sys/net shows the netns of the process that opens it, so without a
// `netns` option this reads and writes the agent's own namespace (the node's); with one, it runs
// `sysctl` inside that namespace through nsenter (we never setns inside Node).
import { readFile, writeFile } from 'node:fs/promises';
import { inNetns, runOk } from './run.ts';

export class SysctlError extends Error {
  override readonly name = 'SysctlError';
}

/** Accepts "net.ipv4.ip_forward" or "net/ipv4/ip_forward"; only net.* keys, no path tricks. */
function keyOf(path: string): string {
  const key = path.replace(/^\/proc\/sys\//, '').replaceAll('/', '.');
  if (!/^net\.[A-Za-z0-9_.-]+$/.test(key) || key.includes('..')) throw new SysctlError(`not a net sysctl: "${path}"`);
  return key;
}

export interface SysctlOptions {
  readonly netns?: string;
}

export async function readSysctl(path: string, opts: SysctlOptions = {}): Promise<string> {
  const key = keyOf(path);
  try {
    if (opts.netns === undefined) return (await readFile(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8')).trim();
    return (await runOk(inNetns(opts.netns, ['sysctl', '-n', key]))).stdout.trim();
  } catch (cause) {
    throw new SysctlError(`cannot read ${key}`, { cause });
  }
}

/** Sets the sysctl if it differs; returns whether it wrote. Safe to repeat. */
export async function ensureSysctl(path: string, value: string, opts: SysctlOptions = {}): Promise<boolean> {
  const key = keyOf(path);
  if ((await readSysctl(key, opts)) === value) return false;
  try {
    if (opts.netns === undefined) await writeFile(`/proc/sys/${key.replaceAll('.', '/')}`, value);
    else await runOk(inNetns(opts.netns, ['sysctl', '-q', '-w', `${key}=${value}`]));
  } catch (cause) {
    throw new SysctlError(`cannot set ${key}=${value}`, { cause });
  }
  return true;
}
