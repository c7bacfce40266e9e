// The VXLAN device (flat.vx). ensureVxlanDevice is called on every sync: it creates the device if
// it is missing (also after someone deleted it), fixes mutable settings in place (MAC, MTU, up,
// addresses) and recreates it only when an immutable one (VNI, local address, uplink, port,
// learning) is wrong. A device that is already right is left alone, so an agent restart never
// blinks traffic. Transmit checksum offload is turned off on it: with it on, some kernels and
// NICs send VXLAN packets whose inner checksum is never filled in (flannel #1279/#1282).
import { formatPrefix, tryParsePrefix } from '../net/ip.ts';
import { CommandError, inNetns, run, runOk } from './run.ts';

export class VxlanDeviceError extends Error {
  override readonly name = 'VxlanDeviceError';
}

export interface VxlanDeviceSpec {
  readonly name: string;
  readonly vni: number;
  readonly port: number;
  /** The uplink device the tunnel is bound to. */
  readonly uplink: string;
  /** The local underlay address. */
  readonly local: string;
  readonly mac: string;
  readonly mtu: number;
  /** Host prefixes to hold ("10.244.1.0/32", "fd00:10:244:1::/128"). */
  readonly addresses: readonly string[];
  /** tx checksum offload wanted on the device (see txChecksumOffloadWanted in agent/mtu.ts). */
  readonly txChecksumOffload: boolean;
}

export interface EnsureVxlanResult {
  readonly created: boolean;
  /** Set when an existing device had wrong immutable settings and was replaced. */
  readonly recreatedBecause?: string;
  /** Human-readable list of in-place fixes made (empty when nothing changed). */
  readonly changes: readonly string[];
}

export interface VxlanOptions {
  readonly netns?: string;
}

type Obj = Record<string, unknown>;

async function readDevice(name: string, opts: VxlanOptions): Promise<Obj | undefined> {
  const r = await run(inNetns(opts.netns, ['ip', '-j', '-d', 'addr', 'show', 'dev', name]));
  if (r.code !== 0) return undefined;
  try {
    const v: unknown = JSON.parse(r.stdout);
    const first: unknown = Array.isArray(v) ? v[0] : undefined;
    return typeof first === 'object' && first !== null ? (first as Obj) : undefined;
  } catch (cause) {
    throw new VxlanDeviceError(`unparseable JSON for device ${name}`, { cause });
  }
}

/** Why the existing device cannot be fixed in place, or undefined if it can. */
function immutableMismatch(dev: Obj, spec: VxlanDeviceSpec): string | undefined {
  const info = (dev.linkinfo ?? {}) as Obj;
  if (info.info_kind !== 'vxlan') return `kind is ${String(info.info_kind)}, not vxlan`;
  const data = (info.info_data ?? {}) as Obj;
  if (data.id !== spec.vni) return `VNI ${String(data.id)} != ${spec.vni}`;
  if (data.local !== spec.local && data.local6 !== spec.local) return `local ${String(data.local ?? data.local6)} != ${spec.local}`;
  if (data.link !== spec.uplink) return `uplink ${String(data.link)} != ${spec.uplink}`;
  if (data.port !== spec.port) return `port ${String(data.port)} != ${spec.port}`;
  if (data.learning !== false) return 'learning is on';
  return undefined;
}

function globalAddresses(dev: Obj): string[] {
  const infos = Array.isArray(dev.addr_info) ? (dev.addr_info as unknown[]) : [];
  const out: string[] = [];
  for (const a of infos) {
    if (typeof a !== 'object' || a === null) continue;
    const { local, prefixlen, scope } = a as Obj;
    if (scope === 'link' || typeof local !== 'string' || typeof prefixlen !== 'number') continue;
    const p = tryParsePrefix(`${local}/${prefixlen}`);
    if (p) out.push(formatPrefix(p));
  }
  return out;
}

function addrLine(op: 'replace' | 'del', cidr: string, dev: string): string {
  // nodad: the address is unique by construction, and DAD would delay it by a second or more.
  return `addr ${op} ${cidr} dev ${dev}${op === 'replace' && cidr.includes(':') ? ' nodad' : ''}`;
}

async function ipBatch(lines: readonly string[], opts: VxlanOptions, what: string): Promise<void> {
  if (lines.length === 0) return;
  try {
    await runOk(inNetns(opts.netns, ['ip', '-batch', '-']), { input: `${lines.join('\n')}\n` });
  } catch (cause) {
    throw new VxlanDeviceError(`failed to ${what}`, { cause });
  }
}

/** Sets tx checksum offload on the device to `on`; true when it had to change it. */
async function ensureChecksumOffload(name: string, on: boolean, opts: VxlanOptions): Promise<boolean> {
  const r = await run(inNetns(opts.netns, ['ethtool', '--json', '-k', name]));
  if (r.code === 0) {
    try {
      const v = JSON.parse(r.stdout) as unknown;
      const feat = Array.isArray(v) ? ((v[0] as Obj | undefined)?.['tx-checksum-ip-generic'] as Obj | undefined) : undefined;
      if (feat && feat.active === on) return false;
    } catch {
      /* unreadable: just set it below */
    }
  }
  try {
    await runOk(inNetns(opts.netns, ['ethtool', '-K', name, 'tx-checksum-ip-generic', on ? 'on' : 'off']));
  } catch (cause) {
    throw new VxlanDeviceError(`cannot turn tx checksum offload ${on ? 'on' : 'off'} on ${name}`, { cause });
  }
  return true;
}

export async function ensureVxlanDevice(spec: VxlanDeviceSpec, opts: VxlanOptions = {}): Promise<EnsureVxlanResult> {
  let dev = await readDevice(spec.name, opts);
  let recreatedBecause: string | undefined;
  if (dev) {
    recreatedBecause = immutableMismatch(dev, spec);
    if (recreatedBecause !== undefined) {
      await deleteVxlanDevice(spec.name, opts);
      dev = undefined;
    }
  }
  if (!dev) {
    await ipBatch(
      [
        `link add ${spec.name} type vxlan id ${spec.vni} dev ${spec.uplink} local ${spec.local} dstport ${spec.port} nolearning`,
        `link set dev ${spec.name} address ${spec.mac} mtu ${spec.mtu}`,
        ...spec.addresses.map((a) => addrLine('replace', a, spec.name)),
        `link set dev ${spec.name} up`,
      ],
      opts,
      `create ${spec.name}`,
    );
    await ensureChecksumOffload(spec.name, spec.txChecksumOffload, opts);
    return { created: true, ...(recreatedBecause !== undefined ? { recreatedBecause } : {}), changes: [] };
  }
  const changes: string[] = [];
  const lines: string[] = [];
  if (typeof dev.address !== 'string' || dev.address.toLowerCase() !== spec.mac) {
    changes.push(`mac ${String(dev.address)} -> ${spec.mac}`);
    lines.push(`link set dev ${spec.name} address ${spec.mac}`);
  }
  if (dev.mtu !== spec.mtu) {
    changes.push(`mtu ${String(dev.mtu)} -> ${spec.mtu}`);
    lines.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
  }
  const have = globalAddresses(dev);
  for (const a of spec.addresses) {
    if (!have.includes(a)) {
      changes.push(`add address ${a}`);
      lines.push(addrLine('replace', a, spec.name));
    }
  }
  for (const a of have) {
    if (!spec.addresses.includes(a)) {
      changes.push(`remove address ${a}`);
      lines.push(addrLine('del', a, spec.name));
    }
  }
  const flags = Array.isArray(dev.flags) ? (dev.flags as unknown[]) : [];
  if (!flags.includes('UP')) {
    changes.push('set up');
    lines.push(`link set dev ${spec.name} up`);
  }
  await ipBatch(lines, opts, `update ${spec.name}`);
  if (await ensureChecksumOffload(spec.name, spec.txChecksumOffload, opts)) changes.push(`tx checksum offload ${spec.txChecksumOffload ? 'on' : 'off'}`);
  return { created: false, changes };
}

/** Removes the device (and with it every neighbour, FDB entry and route on it). Absent is fine. */
export async function deleteVxlanDevice(name: string, opts: VxlanOptions = {}): Promise<boolean> {
  const argv = inNetns(opts.netns, ['ip', 'link', 'del', 'dev', name]);
  const r = await run(argv);
  if (r.code === 0) return true;
  if (/Cannot find device|does not exist/.test(r.stderr)) return false;
  throw new VxlanDeviceError(`cannot delete ${name}`, { cause: new CommandError(argv, r) });
}
