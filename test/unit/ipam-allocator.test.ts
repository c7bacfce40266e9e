// The allocator against an in-memory store with the same contract as the disk store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AllocationError, type Owner, type Reservation, type ReservationStore, allocate, freeCount } from '../../src/ipam/allocator.ts';
import { parseRangeSets, capacity, RangeConfigError } from '../../src/ipam/ranges.ts';
import { formatIP, parseIP } from '../../src/net/ip.ts';

class MemoryStore implements ReservationStore {
  readonly held = new Map<string, Owner>();
  readonly cursor = new Map<number, string>();
  tryReserve(ip: string, owner: Owner): boolean {
    if (this.held.has(ip)) return false;
    this.held.set(ip, owner);
    return true;
  }
  release(ip: string, owner: Owner): void {
    const o = this.held.get(ip);
    if (o && o.containerID === owner.containerID && o.ifname === owner.ifname) this.held.delete(ip);
  }
  list(): Reservation[] {
    return [...this.held].map(([ip, owner]) => ({ ip, owner }));
  }
  heldBy(o: Owner): Reservation[] {
    return this.list().filter((r) => r.owner.containerID === o.containerID && r.owner.ifname === o.ifname);
  }
  lastReserved(i: number): string | undefined {
    return this.cursor.get(i);
  }
  setLastReserved(i: number, ip: string): void {
    this.cursor.set(i, ip);
  }
}

const owner = (n: number): Owner => ({ containerID: `c${n}`, ifname: 'eth0' });

test('range defaults follow host-local: first address .2, never network, broadcast or gateway', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/29' }]]);
  assert.equal(capacity(sets[0]!), 5n); // .2 .. .6
  const store = new MemoryStore();
  const got = Array.from({ length: 5 }, (_, i) => formatIP(allocate(store, sets, owner(i), [])[0]!.ip));
  assert.deepEqual(got, ['10.99.0.2', '10.99.0.3', '10.99.0.4', '10.99.0.5', '10.99.0.6']);
  assert.throws(() => allocate(store, sets, owner(9), []), (e: unknown) => e instanceof AllocationError && e.kind === 'exhausted');
  assert.equal(freeCount(store, sets[0]!), 0n);
});

test('round robin continues after the last reservation and wraps around', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/29' }]]);
  const store = new MemoryStore();
  allocate(store, sets, owner(1), []);
  allocate(store, sets, owner(2), []);
  store.release('10.99.0.2', owner(1));
  // .2 is free again but the cursor is at .3: the next one is .4 (addresses are not reused at once).
  assert.equal(formatIP(allocate(store, sets, owner(3), [])[0]!.ip), '10.99.0.4');
});

test('dual-stack: one address per family, and a failure in the second set releases the first', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/24' }], [{ subnet: 'fd00:99::/64' }]]);
  const store = new MemoryStore();
  const a = allocate(store, sets, owner(1), []);
  assert.deepEqual(a.map((x) => formatIP(x.ip)), ['10.99.0.2', 'fd00:99::2']);
  store.tryReserve('fd00:99::7', owner(50));
  assert.throws(() => allocate(store, sets, owner(2), [parseIP('fd00:99::7')]), /not available/);
  assert.equal(store.list().filter((r) => r.owner.containerID === 'c2').length, 0, 'IPv4 reservation rolled back');
});

test('requested addresses are honoured or refused clearly', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/24' }]]);
  const store = new MemoryStore();
  assert.equal(formatIP(allocate(store, sets, owner(1), [parseIP('10.99.0.77')])[0]!.ip), '10.99.0.77');
  assert.throws(() => allocate(store, sets, owner(2), [parseIP('10.99.0.77')]), /10\.99\.0\.77 is not available/);
  assert.throws(() => allocate(store, sets, owner(3), [parseIP('10.99.0.1')]), /gateway/);
  assert.throws(() => allocate(store, sets, owner(4), [parseIP('10.99.0.255')]), /10\.99\.0\.255 is not in any configured range/);
  assert.throws(() => allocate(store, sets, owner(5), [parseIP('10.98.0.5')]), /not in any configured range/);
});

test('the same attachment cannot hold two addresses of one set', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/24' }]]);
  const store = new MemoryStore();
  allocate(store, sets, owner(1), []);
  assert.throws(() => allocate(store, sets, owner(1), []), (e: unknown) => e instanceof AllocationError && e.kind === 'duplicate');
  // Another interface of the same container is a different attachment.
  assert.doesNotThrow(() => allocate(store, sets, { containerID: 'c1', ifname: 'net1' }, []));
});

test('a range with rangeStart/rangeEnd and a custom gateway', () => {
  const sets = parseRangeSets([[{ subnet: '10.99.0.0/24', rangeStart: '10.99.0.10', rangeEnd: '10.99.0.12', gateway: '10.99.0.11' }]]);
  const store = new MemoryStore();
  const got = [1, 2].map((n) => formatIP(allocate(store, sets, owner(n), [])[0]!.ip));
  assert.deepEqual(got, ['10.99.0.10', '10.99.0.12']);
  assert.throws(() => allocate(store, sets, owner(3), []), /no IP addresses available/);
});

test('invalid ranges are refused with the field named', () => {
  const bad: [unknown, RegExp][] = [
    [[], /no IP ranges/],
    [[[{ subnet: '10.99.0.1/24' }]], /host bits set/],
    [[[{ subnet: '10.99.0.0/31' }]], /too small/],
    [[[{ subnet: '10.99.0.0/24', rangeStart: '10.98.0.1' }]], /rangeStart .* not in/],
    [[[{ subnet: '10.99.0.0/24' }, { subnet: 'fd00::/64' }]], /mixed address families/],
    [[[{ subnet: '10.99.0.0/24' }], [{ subnet: '10.98.0.0/24' }]], /second IPv4 range set/],
    [[[{ subnet: '10.99.0.0/24', foo: 1 }]], /unknown field "foo"/],
    [[[{ subnet: '10.99.0.0/24', rangeStart: '10.99.0.9', rangeEnd: '10.99.0.3' }]], /after rangeEnd/],
    [[[{ subnet: 'banana' }]], /ranges\[0\]\[0\]\.subnet "banana" is not a CIDR/],
  ];
  for (const [raw, re] of bad) assert.throws(() => parseRangeSets(raw), (e: unknown) => e instanceof RangeConfigError && re.test(e.message), JSON.stringify(raw));
});
