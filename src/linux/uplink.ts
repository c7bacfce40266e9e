// Finding the uplink: the device that carries underlay traffic, with its MTU and addresses.
import { canonicalIPText, formatIP, formatPrefix, networkOf, tryParseIP, tryParsePrefix } from '../net/ip.ts';
import type { Family } from '../net/ip.ts';
import { inNetns, runOk } from './run.ts';

export class UplinkError extends Error {
  override readonly name = 'UplinkError';
}

export interface UplinkAddress {
  readonly family: Family;
  /** "172.29.0.1" */
  readonly ip: string;
  /** The address with its prefix length, "172.29.0.1/24". */
  readonly cidr: string;
  /** The on-link network, "172.29.0.0/24". */
  readonly network: string;
}

export interface Uplink {
  readonly name: string;
  readonly mtu: number;
  /** Global-scope addresses only (link-local ones are no use as underlay). */
  readonly addresses: readonly UplinkAddress[];
}

export interface DetectUplinkOptions {
  /** Use this device. */
  readonly name?: string;
  /** Else: the device holding this address, or the one the route to it leaves through. */
  readonly towards?: string;
  readonly netns?: string;
}

type Obj = Record<string, unknown>;

function parseJSON(text: string, what: string): Obj[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v.filter((x): x is Obj => typeof x === 'object' && x !== null) : [];
  } catch (cause) {
    throw new UplinkError(`unparseable output of ${what}`, { cause });
  }
}

function uplinkOf(link: Obj): Uplink | undefined {
  const name = link.ifname;
  const mtu = link.mtu;
  if (typeof name !== 'string' || typeof mtu !== 'number') return undefined;
  const addresses: UplinkAddress[] = [];
  const infos = Array.isArray(link.addr_info) ? (link.addr_info as unknown[]) : [];
  for (const a of infos) {
    if (typeof a !== 'object' || a === null) continue;
    const { local, prefixlen, scope } = a as Obj;
    if (scope !== 'global' || typeof local !== 'string' || typeof prefixlen !== 'number') continue;
    const p = tryParsePrefix(`${local}/${prefixlen}`);
    if (!p) continue;
    addresses.push({
      family: p.ip.family,
      ip: formatIP(p.ip),
      cidr: formatPrefix(p),
      network: formatPrefix({ ip: networkOf(p), length: p.length }),
    });
  }
  return { name, mtu, addresses };
}

export async function detectUplink(opts: DetectUplinkOptions): Promise<Uplink> {
  const addrShow = async (dev?: string): Promise<Obj[]> => {
    const argv = inNetns(opts.netns, ['ip', '-j', 'addr', 'show', ...(dev !== undefined ? ['dev', dev] : [])]);
    try {
      return parseJSON((await runOk(argv)).stdout, 'ip addr');
    } catch (cause) {
      throw new UplinkError(dev !== undefined ? `cannot read device ${dev}` : 'cannot list addresses', { cause });
    }
  };
  if (opts.name !== undefined) {
    const link = (await addrShow(opts.name))[0];
    const up = link && uplinkOf(link);
    if (!up) throw new UplinkError(`uplink ${opts.name} not found`);
    return up;
  }
  if (opts.towards === undefined) throw new UplinkError('detectUplink needs a device name or an address');
  const target = tryParseIP(opts.towards);
  if (!target) throw new UplinkError(`invalid underlay address "${opts.towards}"`);
  const text = formatIP(target);
  // The node's own underlay address routes via lo (local table): look for its holder first.
  for (const link of await addrShow()) {
    const up = uplinkOf(link);
    if (up && up.addresses.some((a) => a.ip === text)) return up;
  }
  let dev: string | undefined;
  try {
    const r = await runOk(inNetns(opts.netns, ['ip', '-j', 'route', 'get', text]));
    const first = parseJSON(r.stdout, 'ip route get')[0];
    dev = typeof first?.dev === 'string' ? first.dev : undefined;
  } catch (cause) {
    throw new UplinkError(`no route to ${text}`, { cause });
  }
  if (dev === undefined || dev === 'lo') throw new UplinkError(`no uplink device towards ${text}`);
  const link = (await addrShow(dev))[0];
  const up = link && uplinkOf(link);
  if (!up) throw new UplinkError(`uplink ${dev} not found`);
  return up;
}

/** The uplink's address equal to `ip`, if it has one (used to check the lease's underlay address). */
export function uplinkHasAddress(uplink: Uplink, ip: string): boolean {
  const text = canonicalIPText(ip);
  return text !== undefined && uplink.addresses.some((a) => a.ip === text);
}
