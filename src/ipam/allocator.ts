// The address allocator: pure logic over a small reservation store, so it is tested without root or disk.
//
// How it stays correct without a lock: a reservation is one atomic create-if-absent in the store, so two
// allocators racing for the same address cannot both win; the loser moves on to the next address. The
// round-robin cursor (last reserved address per range set) is only a hint: a stale cursor costs a few
// extra attempts, never a duplicate. A process killed at any instant leaves at worst a reservation that
// DEL or GC of its attachment releases; there is no lock that could be left held.
import { type IP, addToIP, contains, formatIP, formatPrefix, ipEqual, tryParseIP } from '../net/ip.ts';
import { type RangeSet, type Range, capacity, describeSet, isAllocatable } from './ranges.ts';

export interface Owner {
  readonly containerID: string;
  readonly ifname: string;
}

export interface Reservation {
  readonly ip: string;
  readonly owner: Owner;
}

/** Where reservations live. Every method is synchronous: the plugin is a short-lived process. */
export interface ReservationStore {
  /** Atomically reserves `ip` for `owner`; false when it is already reserved (by anyone). */
  tryReserve(ip: string, owner: Owner): boolean;
  /** Removes the reservation of `ip` only if it belongs to `owner`. */
  release(ip: string, owner: Owner): void;
  list(): Reservation[];
  /** The reservations held by exactly this owner. */
  heldBy(owner: Owner): Reservation[];
  lastReserved(setIndex: number): string | undefined;
  setLastReserved(setIndex: number, ip: string): void;
}

export class AllocationError extends Error {
  override readonly name = 'AllocationError';
  constructor(
    msg: string,
    readonly kind: 'exhausted' | 'unavailable' | 'duplicate' | 'outside',
  ) {
    super(msg);
  }
}

export interface Allocation {
  readonly setIndex: number;
  readonly ip: IP;
  readonly range: Range;
}

export function sameOwner(a: Owner, b: Owner): boolean {
  return a.containerID === b.containerID && a.ifname === b.ifname;
}

/** Which range of the set holds `ip`, if any. */
export function rangeOf(set: RangeSet, ip: IP): Range | undefined {
  return set.ranges.find((r) => contains(r.subnet, ip) && ip.value >= r.start.value && ip.value <= r.end.value);
}

/**
 * Reserves one address per range set for `owner`. `requested` addresses (from runtimeConfig.ips, CNI_ARGS IP=,
 * args.cni.ips) are honoured for the set they fall in or refused; every requested address must fall in some
 * set. On any failure everything reserved by this call is released again.
 */
export function allocate(store: ReservationStore, sets: readonly RangeSet[], owner: Owner, requested: readonly IP[]): Allocation[] {
  const existing = store.heldBy(owner);
  for (const req of requested) {
    if (!sets.some((s) => rangeOf(s, req))) {
      throw new AllocationError(`requested IP ${formatIP(req)} is not in any configured range (${sets.map(describeSet).join('; ')})`, 'outside');
    }
  }
  const done: Allocation[] = [];
  try {
    sets.forEach((set, setIndex) => {
      const held = existing.find((r) => {
        const ip = tryParseIP(r.ip);
        return ip !== undefined && rangeOf(set, ip) !== undefined;
      });
      if (held) {
        throw new AllocationError(`${owner.containerID}/${owner.ifname} already holds ${held.ip}, duplicate allocation is not allowed`, 'duplicate');
      }
      const wanted = requested.filter((ip) => rangeOf(set, ip));
      if (wanted.length > 1) {
        throw new AllocationError(`more than one requested IPv${set.family} address (${wanted.map(formatIP).join(', ')})`, 'unavailable');
      }
      const want = wanted[0];
      done.push(want ? reserveRequested(store, set, setIndex, owner, want) : reserveNext(store, set, setIndex, owner));
    });
  } catch (e) {
    for (const a of done) store.release(formatIP(a.ip), owner);
    throw e;
  }
  return done;
}

function reserveRequested(store: ReservationStore, set: RangeSet, setIndex: number, owner: Owner, ip: IP): Allocation {
  const range = rangeOf(set, ip)!;
  if (ipEqual(ip, range.gateway)) throw new AllocationError(`requested ip ${formatIP(ip)} is subnet's gateway`, 'unavailable');
  if (!isAllocatable(range, ip)) {
    throw new AllocationError(`requested ip ${formatIP(ip)} is the network or broadcast address of ${formatPrefix(range.subnet)}`, 'unavailable');
  }
  if (!store.tryReserve(formatIP(ip), owner)) {
    throw new AllocationError(`requested IP address ${formatIP(ip)} is not available in range set ${describeSet(set)}`, 'unavailable');
  }
  return { setIndex, ip, range };
}

/** Walks the set cyclically, starting after the last reserved address, and takes the first free one. */
function reserveNext(store: ReservationStore, set: RangeSet, setIndex: number, owner: Owner): Allocation {
  const total = capacity(set);
  const last = store.lastReserved(setIndex);
  const lastIP = last !== undefined ? tryParseIP(last) : undefined;
  let pos = startPosition(set, lastIP);
  let tried = 0n;
  // Every candidate is visited at most once; the loop ends at the first successful reservation.
  for (let steps = 0n; tried < total && steps < total + BigInt(set.ranges.length) * 4n + 4n; steps++) {
    const range = set.ranges[pos.range]!;
    const ip = pos.ip;
    pos = advance(set, pos);
    if (!isAllocatable(range, ip)) continue;
    tried++;
    if (store.tryReserve(formatIP(ip), owner)) {
      store.setLastReserved(setIndex, formatIP(ip));
      return { setIndex, ip, range };
    }
  }
  throw new AllocationError(`no IP addresses available in range set: ${describeSet(set)}`, 'exhausted');
}

interface Position {
  range: number;
  ip: IP;
}

function startPosition(set: RangeSet, last: IP | undefined): Position {
  if (last) {
    const idx = set.ranges.findIndex((r) => last.family === r.start.family && last.value >= r.start.value && last.value <= r.end.value);
    if (idx >= 0) return advance(set, { range: idx, ip: last });
  }
  return { range: 0, ip: set.ranges[0]!.start };
}

function advance(set: RangeSet, pos: Position): Position {
  const range = set.ranges[pos.range]!;
  if (pos.ip.value < range.end.value) return { range: pos.range, ip: addToIP(pos.ip, 1n) };
  const next = (pos.range + 1) % set.ranges.length;
  return { range: next, ip: set.ranges[next]!.start };
}

/** Free addresses per set (for STATUS): capacity minus reservations inside the set. */
export function freeCount(store: ReservationStore, set: RangeSet): bigint {
  let used = 0n;
  for (const r of store.list()) {
    const ip = tryParseIP(r.ip);
    if (ip && rangeOf(set, ip) && set.ranges.some((rg) => isAllocatable(rg, ip))) used++;
  }
  return capacity(set) - used;
}
