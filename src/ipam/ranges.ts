// host-local's range sets, parsed and validated (pure). A range set is one inner list of `ranges`: the pool
// for one address of one family. Defaults follow host-local: gateway = network + 1, rangeStart = network + 1,
// rangeEnd = broadcast - 1 (IPv4) or the last address (IPv6); the network address, the IPv4 broadcast
// address and the gateway are never handed out.
import {
  type Family,
  type IP,
  type Prefix,
  addToIP,
  bitsOf,
  compareIP,
  contains,
  formatIP,
  formatPrefix,
  isNetwork,
  lastOf,
  networkOf,
  overlaps,
  tryParseIP,
  tryParsePrefix,
} from '../net/ip.ts';

export class RangeConfigError extends Error {
  override readonly name = 'RangeConfigError';
}

export interface Range {
  readonly subnet: Prefix;
  readonly start: IP;
  readonly end: IP;
  readonly gateway: IP;
}

export interface RangeSet {
  readonly family: Family;
  readonly ranges: readonly Range[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const RANGE_KEYS = new Set(['subnet', 'rangeStart', 'rangeEnd', 'gateway']);

function parseRange(raw: unknown, field: string): Range {
  if (!isObject(raw)) throw new RangeConfigError(`${field} must be an object`);
  for (const k of Object.keys(raw)) {
    if (!RANGE_KEYS.has(k)) throw new RangeConfigError(`${field}: unknown field "${k}"`);
  }
  const subnetText = raw['subnet'];
  if (typeof subnetText !== 'string') throw new RangeConfigError(`${field}.subnet is required`);
  const subnet = tryParsePrefix(subnetText);
  if (!subnet) throw new RangeConfigError(`${field}.subnet "${subnetText}" is not a CIDR`);
  if (!isNetwork(subnet)) {
    throw new RangeConfigError(`${field}.subnet: network ${subnetText} has host bits set; use ${formatIP(networkOf(subnet))}/${subnet.length}`);
  }
  if (subnet.length > bitsOf(subnet.ip.family) - 2) {
    throw new RangeConfigError(`${field}.subnet: network ${subnetText} too small to allocate from`);
  }
  const addrIn = (key: string): IP | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    const ip = typeof v === 'string' ? tryParseIP(v) : undefined;
    if (!ip) throw new RangeConfigError(`${field}.${key} ${JSON.stringify(v)} is not an IP address`);
    if (!contains(subnet, ip)) throw new RangeConfigError(`${field}.${key} ${JSON.stringify(v)} is not in ${subnetText}`);
    return ip;
  };
  const network = networkOf(subnet);
  const last = lastOf(subnet);
  const gateway = addrIn('gateway') ?? addToIP(network, 1n);
  const start = addrIn('rangeStart') ?? addToIP(network, 1n);
  const end = addrIn('rangeEnd') ?? (subnet.ip.family === 4 ? addToIP(last, -1n) : last);
  if (compareIP(start, end) > 0) throw new RangeConfigError(`${field}: rangeStart ${formatIP(start)} is after rangeEnd ${formatIP(end)}`);
  return { subnet, start, end, gateway };
}

/** Parses `ranges` (a list of range sets). At most one set per family: one address per family per attachment. */
export function parseRangeSets(raw: unknown, field = 'ipam.ranges'): RangeSet[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new RangeConfigError(`${field}: no IP ranges specified`);
  const sets: RangeSet[] = raw.map((inner: unknown, i) => {
    if (!Array.isArray(inner) || inner.length === 0) throw new RangeConfigError(`${field}[${i}] must be a non-empty list of ranges`);
    const ranges = inner.map((r: unknown, j) => parseRange(r, `${field}[${i}][${j}]`));
    const family = ranges[0]!.subnet.ip.family;
    ranges.forEach((r, j) => {
      if (r.subnet.ip.family !== family) throw new RangeConfigError(`${field}[${i}][${j}]: mixed address families in one range set`);
      ranges.slice(0, j).forEach((o, k) => {
        if (overlapsRange(o, r)) throw new RangeConfigError(`${field}[${i}][${j}] overlaps ${field}[${i}][${k}]`);
      });
    });
    return { family, ranges };
  });
  sets.forEach((s, i) => {
    sets.slice(0, i).forEach((o, k) => {
      if (o.family === s.family) {
        throw new RangeConfigError(`${field}[${i}]: a second IPv${s.family} range set (only one address per family per attachment; see ${field}[${k}])`);
      }
      for (const a of s.ranges) for (const b of o.ranges) {
        if (overlaps(a.subnet, b.subnet)) throw new RangeConfigError(`${field}: range set ${i} overlaps with ${k}`);
      }
    });
  });
  return sets;
}

function overlapsRange(a: Range, b: Range): boolean {
  return compareIP(a.start, b.end) <= 0 && compareIP(b.start, a.end) <= 0;
}

/** Whether `ip` may be handed out from `r` (inside start..end, not network, IPv4 broadcast or gateway). */
export function isAllocatable(r: Range, ip: IP): boolean {
  if (ip.family !== r.subnet.ip.family) return false;
  if (compareIP(ip, r.start) < 0 || compareIP(ip, r.end) > 0) return false;
  if (ip.value === networkOf(r.subnet).value) return false;
  if (ip.family === 4 && ip.value === lastOf(r.subnet).value) return false;
  return ip.value !== r.gateway.value;
}

/** Number of addresses the set can hand out. */
export function capacity(set: RangeSet): bigint {
  let n = 0n;
  for (const r of set.ranges) {
    n += r.end.value - r.start.value + 1n;
    const never = new Set([networkOf(r.subnet).value, r.gateway.value, ...(r.subnet.ip.family === 4 ? [lastOf(r.subnet).value] : [])]);
    for (const x of never) {
      if (x >= r.start.value && x <= r.end.value) n -= 1n;
    }
  }
  return n;
}

export function describeSet(set: RangeSet): string {
  return set.ranges.map((r) => `${formatIP(r.start)}-${formatIP(r.end)}`).join(',');
}

export function subnetText(r: Range): string {
  return formatPrefix(r.subnet);
}
