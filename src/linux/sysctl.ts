// Network sysctls. /proc/sys/net shows the netns of the process that opens it, so without a
// `netns` option this reads and writes the caller's own namespace (the node's, for the agent and the
// plugin); with one, it runs `sysctl` inside that namespace through nsenter (we never setns inside Node).
//
// Keys are kept in slash form internally ("net/ipv6/conf/flat.vx/accept_ra"): the dotted form cannot
// name an interface whose name contains a dot, and sysctl(8) accepts the slash form too.
// Local reads and writes are synchronous on purpose: a /proc/sys file is answered at once, and the first
// asynchronous fs call would start libuv's thread pool (four threads) in the one-shot plugin for nothing.
import { writeFileSync } from 'node:fs';
import { readText } from './files.ts';
import { inNetns, runOk } from './run.ts';

export class SysctlError extends Error {
  override readonly name = 'SysctlError';
}

/**
 * Accepts "net.ipv4.ip_forward" (no interface names with dots), "net/ipv4/ip_forward" or
 * "/proc/sys/net/ipv4/ip_forward"; only net/* keys, no path tricks. Returns the slash form.
 */
function keyOf(path: string): string {
  const bare = path.replace(/^\/proc\/sys\//, '');
  const key = bare.includes('/') ? bare : bare.replaceAll('.', '/');
  const parts = key.split('/');
  if (parts[0] !== 'net' || parts.some((p) => !/^[A-Za-z0-9_.-]+$/.test(p) || p === '.' || p === '..')) {
    throw new SysctlError(`not a net sysctl: "${path}"`);
  }
  return key;
}

export interface SysctlOptions {
  readonly netns?: string;
  /** A knob that does not exist here (IPv6 disabled, no such interface) is not an error: nothing to do. */
  readonly missingOk?: boolean;
}

export async function readSysctl(path: string, opts: SysctlOptions = {}): Promise<string> {
  const key = keyOf(path);
  try {
    if (opts.netns === undefined) return readText(`/proc/sys/${key}`).trim();
    return (await runOk(inNetns(opts.netns, ['sysctl', '-n', key]))).stdout.trim();
  } catch (cause) {
    throw new SysctlError(`cannot read ${key}`, { cause });
  }
}

/** Sets the sysctl if it differs; returns whether it wrote. Safe to repeat. */
export async function ensureSysctl(path: string, value: string, opts: SysctlOptions = {}): Promise<boolean> {
  const key = keyOf(path);
  let current: string;
  try {
    current = await readSysctl(key, opts);
  } catch (e) {
    if (opts.missingOk) return false;
    throw e;
  }
  if (current === value) return false;
  try {
    if (opts.netns === undefined) writeFileSync(`/proc/sys/${key}`, value);
    else await runOk(inNetns(opts.netns, ['sysctl', '-q', '-w', `${key}=${value}`]));
  } catch (cause) {
    throw new SysctlError(`cannot set ${key}=${value}`, { cause });
  }
  return true;
}
