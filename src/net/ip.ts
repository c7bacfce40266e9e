// Pure IPv4/IPv6 address and prefix math on bigint. Nothing here touches the OS.
//
// Parsing is strict on purpose: no octal or shorthand IPv4 ("010.1.1.1", "10.1"), no zones, no
// leading/trailing junk. A value that reaches the kernel or nft has passed through here first, so
// a malformed address becomes a clear validation error instead of a DNS lookup or a silent wrap.

export type Family = 4 | 6;

export interface IP {
  readonly family: Family;
  readonly value: bigint;
}

export interface Prefix {
  /** The address as written (host bits may be set, e.g. a pod address 10.1.0.5/24). */
  readonly ip: IP;
  readonly length: number;
}

export class AddressError extends Error {
  override readonly name = 'AddressError';
}

const V4_BITS = 32;
const V6_BITS = 128;

export function bitsOf(family: Family): number {
  return family === 4 ? V4_BITS : V6_BITS;
}

function maxValue(family: Family): bigint {
  return (1n << BigInt(bitsOf(family))) - 1n;
}

const V4_OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])$/;

function parseV4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!V4_OCTET.test(part)) return undefined;
    value = (value << 8n) | BigInt(Number(part));
  }
  return value;
}

const V6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseV6(text: string): bigint | undefined {
  if (text.length > 45 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  let head = text;
  let tailV4: bigint | undefined;
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    tailV4 = parseV4(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const groupsOf = (s: string): string[] | undefined => {
    if (s === '') return [];
    const g = s.split(':');
    return g.every((x) => V6_GROUP.test(x)) ? g : undefined;
  };
  const left = groupsOf(halves[0] ?? '');
  const right = halves.length === 2 ? groupsOf(halves[1] ?? '') : [];
  if (left === undefined || right === undefined) return undefined;
  let groups: string[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return undefined;
    groups = [...left, ...Array<string>(missing).fill('0'), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return undefined;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(parseInt(g, 16));
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | tailV4;
  return value;
}

/** Parses a bare address ("10.1.0.5", "fd00::1"). Returns undefined when it is not one. */
export function tryParseIP(text: string): IP | undefined {
  if (typeof text !== 'string') return undefined;
  if (text.includes(':')) {
    const v = parseV6(text);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseV4(text);
  return v === undefined ? undefined : { family: 4, value: v };
}

export function parseIP(text: string): IP {
  const ip = tryParseIP(text);
  if (!ip) throw new AddressError(`invalid IP address "${String(text)}"`);
  return ip;
}

/** Parses "addr/len". The address may have host bits set; use isNetwork() to require none. */
export function tryParsePrefix(text: string): Prefix | undefined {
  if (typeof text !== 'string') return undefined;
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = tryParseIP(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return undefined;
  const length = Number(lenText);
  if (length > bitsOf(ip.family)) return undefined;
  return { ip, length };
}

export function parsePrefix(text: string): Prefix {
  const p = tryParsePrefix(text);
  if (!p) throw new AddressError(`invalid CIDR "${String(text)}"`);
  return p;
}

function hostMask(family: Family, length: number): bigint {
  return (1n << BigInt(bitsOf(family) - length)) - 1n;
}

export function networkOf(p: Prefix): IP {
  return { family: p.ip.family, value: p.ip.value & ~hostMask(p.ip.family, p.length) & maxValue(p.ip.family) };
}

/** Last address of the prefix (the IPv4 broadcast address). */
export function lastOf(p: Prefix): IP {
  return { family: p.ip.family, value: networkOf(p).value | hostMask(p.ip.family, p.length) };
}

export function isNetwork(p: Prefix): boolean {
  return (p.ip.value & hostMask(p.ip.family, p.length)) === 0n;
}

/** The prefix with host bits cleared. */
export function canonicalPrefix(p: Prefix): Prefix {
  return { ip: networkOf(p), length: p.length };
}

export function size(p: Prefix): bigint {
  return 1n << BigInt(bitsOf(p.ip.family) - p.length);
}

export function contains(p: Prefix, ip: IP): boolean {
  return ip.family === p.ip.family && (ip.value & ~hostMask(ip.family, p.length)) === networkOf(p).value;
}

export function overlaps(a: Prefix, b: Prefix): boolean {
  if (a.ip.family !== b.ip.family) return false;
  const shorter = a.length <= b.length ? a : b;
  const longer = shorter === a ? b : a;
  return contains(shorter, longer.ip);
}

export function addToIP(ip: IP, delta: bigint): IP {
  const value = ip.value + delta;
  if (value < 0n || value > maxValue(ip.family)) throw new AddressError('address arithmetic out of range');
  return { family: ip.family, value };
}

export function compareIP(a: IP, b: IP): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

export function ipEqual(a: IP, b: IP): boolean {
  return a.family === b.family && a.value === b.value;
}

export function formatIP(ip: IP): string {
  if (ip.family === 4) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatPrefix(p: Prefix): string {
  return `${formatIP(p.ip)}/${p.length}`;
}

/** Normalises an address string to its canonical text; undefined when it does not parse. */
export function canonicalIPText(text: string): string | undefined {
  const ip = tryParseIP(text);
  return ip ? formatIP(ip) : undefined;
}

/** The i-th subnet of length `childLength` inside `parent` (used to carve node pod subnets). */
export function nthSubnet(parent: Prefix, childLength: number, index: bigint): Prefix {
  if (childLength < parent.length || childLength > bitsOf(parent.ip.family)) {
    throw new AddressError(`cannot carve /${childLength} subnets from ${formatPrefix(parent)}`);
  }
  const count = 1n << BigInt(childLength - parent.length);
  if (index < 0n || index >= count) throw new AddressError(`subnet index ${index} outside ${formatPrefix(parent)}`);
  const step = 1n << BigInt(bitsOf(parent.ip.family) - childLength);
  return { ip: { family: parent.ip.family, value: networkOf(parent).value + index * step }, length: childLength };
}

export function subnetCount(parent: Prefix, childLength: number): bigint {
  if (childLength < parent.length) return 0n;
  return 1n << BigInt(childLength - parent.length);
}
