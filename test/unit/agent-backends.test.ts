import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desiredHostGw } from '../../src/agent/backends/hostgw.ts';
import { desiredVxlan, vtepLocalAddress, vtepMACFor, vxlanDeviceAddresses } from '../../src/agent/backends/vxlan.ts';
import { DesiredMemo } from '../../src/agent/datapath.ts';
import { MtuError, encapOverhead, podMTU } from '../../src/agent/mtu.ts';
import type { NodeLease } from '../../src/store/types.ts';

const CLUSTER = ['10.99.0.0/16', 'fd00:99::/48'];

function lease(n: number, over: Partial<NodeLease> = {}): NodeLease {
  return {
    node: `n${n}`,
    podCIDRs: [`10.99.${n}.0/24`, `fd00:99:0:${n}::/64`],
    underlayIPs: [`172.29.0.${n}`, `fd00:29::${n}`],
    backend: 'vxlan',
    vtepMAC: `0e:00:00:00:00:0${n}`,
    expiresAt: 0,
    ...over,
  };
}

const hostgwFacts = { clusterCIDRs: CLUSTER, uplink: 'eth0', uplinkPrefixes: ['172.29.0.1/24', 'fd00:29::1/64'] };

test('host-gw: one route per peer and family, via the peer underlay address of that family', () => {
  const d = desiredHostGw(lease(1), [lease(2), lease(3), lease(1)], hostgwFacts);
  assert.deepEqual(
    d.routes.map((r) => `${r.dst} via ${r.gateway} dev ${r.dev}${r.onlink ? ' onlink' : ''}`),
    [
      '10.99.2.0/24 via 172.29.0.2 dev eth0',
      'fd00:99:0:2::/64 via fd00:29::2 dev eth0',
      '10.99.3.0/24 via 172.29.0.3 dev eth0',
      'fd00:99:0:3::/64 via fd00:29::3 dev eth0',
    ],
  );
  assert.deepEqual(d.neighbours, []);
  assert.deepEqual(d.fdb, []);
  assert.deepEqual(d.unreachable, []);
});

test('host-gw: peers that are not on-link, or lack a family, are reported and not routed', () => {
  const far = lease(4, { underlayIPs: ['192.0.2.4'] });
  const d = desiredHostGw(lease(1), [lease(2), far], hostgwFacts);
  assert.deepEqual(d.routes.map((r) => r.node), ['n2', 'n2']);
  assert.equal(d.unreachable.length, 2);
  assert.match(d.unreachable[0]?.reason ?? '', /192\.0\.2\.4 is not on-link on eth0/);
  assert.equal(d.unreachable[0]?.family, 4);
  assert.match(d.unreachable[1]?.reason ?? '', /no IPv6 underlay/);
});

test('backends refuse bogus peer subnets instead of routing them', () => {
  const cases: Array<[string, Partial<NodeLease>, RegExp]> = [
    ['default route', { podCIDRs: ['0.0.0.0/0'] }, /outside the cluster CIDRs/],
    ['outside cluster', { podCIDRs: ['10.98.1.0/24'] }, /outside the cluster CIDRs/],
    ['whole cluster', { podCIDRs: ['10.99.0.0/16'] }, /overlaps/],
    ['own subnet', { podCIDRs: ['10.99.1.0/24'] }, /overlaps/],
    ['host bits', { podCIDRs: ['10.99.5.1/24'] }, /malformed/],
    ['garbage', { podCIDRs: ['10.99.5.0/24; rm -rf'] }, /malformed/],
    ['no subnet', { podCIDRs: [] }, /no pod subnet/],
  ];
  for (const [name, over, reason] of cases) {
    const d = desiredHostGw(lease(1), [lease(5, over)], hostgwFacts);
    assert.deepEqual(d.routes, [], name);
    assert.match(d.unreachable[0]?.reason ?? '', reason, name);
  }
  // Two peers claiming the same subnet: the first by name wins, the other is reported.
  const d = desiredHostGw(lease(1), [lease(3, { podCIDRs: ['10.99.2.0/24'] }), lease(2)], hostgwFacts);
  assert.deepEqual(d.routes.map((r) => `${r.node} ${r.dst}`), ['n2 10.99.2.0/24', 'n2 fd00:99:0:2::/64']);
  assert.equal(d.unreachable[0]?.node, 'n3');
});

test('vxlan: neighbour, FDB and onlink route per peer, dual-stack over an IPv4 underlay', () => {
  const d = desiredVxlan(lease(1), [lease(2)], { clusterCIDRs: CLUSTER, underlayFamily: 4 });
  assert.deepEqual(d.neighbours.map((n) => `${n.ip} ${n.mac} ${n.dev}`), [
    '10.99.2.0 0e:00:00:00:00:02 flat.vx',
    'fd00:99:0:2:: 0e:00:00:00:00:02 flat.vx',
  ]);
  assert.deepEqual(d.fdb.map((f) => `${f.mac} ${f.dst} ${f.dev}`), ['0e:00:00:00:00:02 172.29.0.2 flat.vx']);
  assert.deepEqual(d.routes.map((r) => `${r.dst} via ${r.gateway} dev ${r.dev}${r.onlink ? ' onlink' : ''}`), [
    '10.99.2.0/24 via 10.99.2.0 dev flat.vx onlink',
    'fd00:99:0:2::/64 via fd00:99:0:2:: dev flat.vx onlink',
  ]);
  const v6 = desiredVxlan(lease(1), [lease(2)], { clusterCIDRs: CLUSTER, underlayFamily: 6 });
  assert.deepEqual(v6.fdb.map((f) => f.dst), ['fd00:29::2']);
});

test('vxlan: peers without a usable VTEP are reported', () => {
  const withoutMAC = ({ vtepMAC: _omit, ...rest }: NodeLease): NodeLease => rest;
  const cases: Array<[(l: NodeLease) => NodeLease, RegExp]> = [
    [withoutMAC, /no valid VTEP MAC/],
    [(l) => ({ ...l, vtepMAC: '01:00:5e:00:00:01' }), /no valid VTEP MAC/],
    [(l) => ({ ...l, vtepMAC: 'zz' }), /no valid VTEP MAC/],
    [(l) => ({ ...l, backend: 'host-gw' }), /backend host-gw/],
    [(l) => ({ ...l, underlayIPs: ['fd00:29::2'] }), /no IPv4 underlay/],
  ];
  for (const [edit, reason] of cases) {
    const d = desiredVxlan(lease(1), [edit(lease(2)), lease(3)], { clusterCIDRs: CLUSTER, underlayFamily: 4 });
    assert.ok(!d.routes.some((r) => r.node === 'n2'), String(reason));
    assert.match(d.unreachable.find((u) => u.node === 'n2')?.reason ?? '', reason);
  }
  // Two nodes publishing one MAC: the first by name keeps it, the other is not programmed.
  const d = desiredVxlan(lease(1), [lease(3, { vtepMAC: '0e:00:00:00:00:02' }), lease(2)], { clusterCIDRs: CLUSTER, underlayFamily: 4 });
  assert.deepEqual([...new Set(d.routes.map((r) => r.node))], ['n2']);
  assert.match(d.unreachable.find((u) => u.node === 'n3')?.reason ?? '', /also used by n2/);
});

test('vxlan helpers: device addresses, deterministic VTEP MAC, local address choice', () => {
  assert.deepEqual(vxlanDeviceAddresses(['10.99.1.0/24', 'fd00:99:0:1::/64']), ['10.99.1.0/32', 'fd00:99:0:1::/128']);
  const mac = vtepMACFor('node-a');
  assert.equal(mac, vtepMACFor('node-a'));
  assert.notEqual(mac, vtepMACFor('node-b'));
  assert.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  const first = parseInt(mac.slice(0, 2), 16);
  assert.equal(first & 1, 0, 'unicast');
  assert.equal(first & 2, 2, 'locally administered');
  assert.equal(vtepLocalAddress(lease(1, { underlayIPs: ['fd00:29::1', '172.29.0.1'] })), '172.29.0.1');
  assert.equal(vtepLocalAddress(lease(1, { underlayIPs: ['fd00:29::1'] })), 'fd00:29::1');
  assert.equal(vtepLocalAddress(lease(1, { underlayIPs: [] })), undefined);
});

test('pod MTU is the uplink MTU minus the backend overhead', () => {
  assert.equal(encapOverhead('host-gw', 4), 0);
  assert.equal(podMTU('host-gw', 1500, 4), 1500);
  assert.equal(podMTU('vxlan', 1500, 4), 1450);
  assert.equal(podMTU('vxlan', 1500, 6), 1430);
  assert.equal(podMTU('vxlan', 9001, 4), 8951);
  assert.equal(podMTU('vxlan', 2100, 4, [4, 6]), 2050);
  assert.throws(() => podMTU('vxlan', 1300, 4, [4, 6]), MtuError);
  assert.throws(() => podMTU('vxlan', 0, 4), MtuError);
});

test('parsed facts are kept per lease object: a changed lease (a new object) is parsed again', () => {
  const peers = [lease(2), lease(3)];
  const first = desiredHostGw(lease(1), peers, hostgwFacts);
  assert.deepEqual(desiredHostGw(lease(1), peers, hostgwFacts), first);
  // The store hands out a new object when a record changes: the peer's new underlay must show.
  const moved = desiredHostGw(lease(1), [lease(2, { underlayIPs: ['172.29.0.9', 'fd00:29::9'] }), peers[1]!], hostgwFacts);
  assert.deepEqual(moved.routes.filter((r) => r.node === 'n2').map((r) => r.gateway), ['172.29.0.9', 'fd00:29::9']);
  assert.deepEqual(moved.routes.filter((r) => r.node === 'n3'), first.routes.filter((r) => r.node === 'n3'));
  const bogus = desiredHostGw(lease(1), [lease(2, { podCIDRs: ['10.99.2.1/24'] }), peers[1]!], hostgwFacts);
  assert.match(bogus.unreachable[0]?.reason ?? '', /malformed pod subnet "10\.99\.2\.1\/24"/);
});

test('the desired-state memo reuses a result only for the very same inputs', () => {
  const memo = new DesiredMemo();
  const self = lease(1);
  const peers = [lease(2)];
  let computed = 0;
  const compute = () => {
    computed++;
    return desiredHostGw(self, peers, hostgwFacts);
  };
  const a = memo.get(['host-gw', self, peers], compute);
  assert.equal(memo.get(['host-gw', self, peers], compute), a);
  assert.equal(computed, 1);
  // equal but not the same array: computed again (inputs are compared by identity, never deeply)
  assert.notEqual(memo.get(['host-gw', self, [...peers]], compute), a);
  memo.get(['vxlan', self, peers], compute);
  assert.equal(computed, 3);
});
