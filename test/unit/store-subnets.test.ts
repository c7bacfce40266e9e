import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalPrefix, formatPrefix, overlaps, parsePrefix } from '../../src/net/ip.ts';
import {
  chooseSubnets,
  isNodeName,
  NetworkConfigError,
  poolsOf,
  rejectConflicts,
  validateLease,
} from '../../src/store/subnets.ts';
import type { SubnetClaim } from '../../src/store/subnets.ts';
import { SubnetsExhaustedError } from '../../src/store/types.ts';
import type { ClusterNetwork, NodeLease } from '../../src/store/types.ts';

const v4: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16'], nodePrefixLength: { 4: 24 } };
const dual: ClusterNetwork = {
  clusterCIDRs: ['10.244.0.0/16', 'fd10:244::/56'],
  nodePrefixLength: { 4: 24, 6: 64 },
};
const now = 1_000_000;
const opts = { now, reuseGraceMs: 30_000 };

function claim(node: string, podCIDRs: string[], heldUntil = now + 10_000): SubnetClaim {
  return { node, podCIDRs, heldUntil };
}

void describe('chooseSubnets', () => {
  void it('gives the first node the lowest subnet', () => {
    assert.deepEqual(chooseSubnets('a', v4, [], opts), ['10.244.0.0/24']);
  });

  void it('skips live claims of other nodes', () => {
    const claims = [claim('a', ['10.244.0.0/24']), claim('b', ['10.244.1.0/24'])];
    assert.deepEqual(chooseSubnets('c', v4, claims, opts), ['10.244.2.0/24']);
  });

  void it('fills a hole left by a claim past its grace', () => {
    const claims = [claim('a', ['10.244.0.0/24'], now - 30_001), claim('b', ['10.244.1.0/24'])];
    assert.deepEqual(chooseSubnets('c', v4, claims, opts), ['10.244.0.0/24']);
  });

  void it('does not reuse a subnet whose claim lapsed less than the grace ago', () => {
    const claims = [claim('a', ['10.244.0.0/24'], now - 29_999)];
    assert.deepEqual(chooseSubnets('c', v4, claims, opts), ['10.244.1.0/24']);
    // exactly at the boundary the grace is over
    assert.deepEqual(chooseSubnets('c', v4, [claim('a', ['10.244.0.0/24'], now - 30_000)], opts), ['10.244.0.0/24']);
  });

  void it('gives a node its previous subnet back, even long expired, when nobody took it', () => {
    const claims = [claim('a', ['10.244.0.0/24']), claim('b', ['10.244.7.0/24'], now - 10_000_000)];
    assert.deepEqual(chooseSubnets('b', v4, claims, opts), ['10.244.7.0/24']);
  });

  void it('ignores a previous subnet that no longer fits the network', () => {
    const claims = [claim('b', ['10.9.0.0/24']), claim('c', ['10.244.0.0/25'])];
    assert.deepEqual(chooseSubnets('b', v4, claims, opts), ['10.244.1.0/24']);
    assert.deepEqual(chooseSubnets('c', v4, claims, opts), ['10.244.0.0/24']);
  });

  void it('does not give a node back a subnet another node validly holds now', () => {
    const claims = [claim('b', ['10.244.0.0/24'], now - 1_000_000), claim('a', ['10.244.0.0/24'])];
    assert.deepEqual(chooseSubnets('b', v4, claims, opts), ['10.244.1.0/24']);
  });

  void it('a malformed overlapping claim blocks new allocations but does not evict a node from its own subnet', () => {
    const claims = [claim('b', ['10.244.0.0/24'], now - 1), claim('a', ['10.244.0.128/25'])];
    assert.deepEqual(chooseSubnets('b', v4, claims, opts), ['10.244.0.0/24']);
    assert.deepEqual(chooseSubnets('c', v4, claims, opts), ['10.244.1.0/24']);
  });

  void it('avoids claims of other lengths (a misconfigured neighbour) by jumping past them', () => {
    const claims = [claim('x', ['10.244.0.0/23']), claim('y', ['10.244.2.128/25']), claim('z', ['10.0.0.0/8'])];
    // 10.0.0.0/8 contains the whole cluster CIDR: nothing is free
    assert.throws(() => chooseSubnets('c', v4, claims, opts), SubnetsExhaustedError);
    assert.deepEqual(chooseSubnets('c', v4, claims.slice(0, 2), opts), ['10.244.3.0/24']);
  });

  void it('throws SubnetsExhaustedError when every subnet is held', () => {
    const small: ClusterNetwork = { clusterCIDRs: ['10.1.0.0/23'], nodePrefixLength: { 4: 24 } };
    const claims = [claim('a', ['10.1.0.0/24']), claim('b', ['10.1.1.0/24'])];
    assert.throws(() => chooseSubnets('c', small, claims, opts), SubnetsExhaustedError);
    assert.deepEqual(chooseSubnets('a', small, claims, opts), ['10.1.0.0/24']);
  });

  // Its speed at this size is measured by bench/convergence.ts (an acquire next to 5,000 leases), not
  // here; the timeout only stops a walk over every candidate of the /8 from hanging the suite.
  void it('finds the lowest free /24 of a /8 among 5,000 claims', { timeout: 10_000 }, () => {
    const big: ClusterNetwork = { clusterCIDRs: ['10.0.0.0/8'], nodePrefixLength: { 4: 24 } };
    const claims: SubnetClaim[] = [];
    for (let i = 0; i < 5000; i++) claims.push(claim(`n${i}`, [`10.${i >> 8}.${i & 255}.0/24`]));
    assert.deepEqual(chooseSubnets('new', big, claims, opts), ['10.19.136.0/24']);
    // A hole below the top of the held range is found first.
    assert.deepEqual(chooseSubnets('new', big, claims.filter((c) => c.node !== 'n777'), opts), ['10.3.9.0/24']);
  });

  void it('picks one subnet per family for dual-stack, in the network order', () => {
    const claims = [claim('a', ['10.244.0.0/24', 'fd10:244::/64'])];
    assert.deepEqual(chooseSubnets('b', dual, claims, opts), ['10.244.1.0/24', 'fd10:244:0:1::/64']);
    // a node that had only a v4 subnet keeps it and gets a fresh v6 one
    const claims2 = [...claims, claim('c', ['10.244.9.0/24'])];
    assert.deepEqual(chooseSubnets('c', dual, claims2, opts), ['10.244.9.0/24', 'fd10:244:0:1::/64']);
  });

  void it('rejects bad networks', () => {
    assert.throws(() => poolsOf({ clusterCIDRs: [], nodePrefixLength: {} }), NetworkConfigError);
    assert.throws(() => poolsOf({ clusterCIDRs: ['10.0.0.1/16'], nodePrefixLength: { 4: 24 } }), /host bits/);
    assert.throws(() => poolsOf({ clusterCIDRs: ['10.0.0.0/16', '10.1.0.0/16'], nodePrefixLength: { 4: 24 } }), /more than one/);
    assert.throws(() => poolsOf({ clusterCIDRs: ['fd00::/48'], nodePrefixLength: { 4: 24 } }), /no node prefix length for IPv6/);
    assert.throws(() => poolsOf({ clusterCIDRs: ['10.0.0.0/16'], nodePrefixLength: { 4: 8 } }), /does not fit/);
    assert.throws(() => chooseSubnets('a', { clusterCIDRs: ['x'], nodePrefixLength: {} }, [], opts), NetworkConfigError);
  });

  void it('never overlaps a blocking claim and always returns a subnet of the pool (property)', () => {
    const net: ClusterNetwork = { clusterCIDRs: ['10.8.0.0/20'], nodePrefixLength: { 4: 24 } };
    const arbClaim = fc.record({
      node: fc.constantFrom('a', 'b', 'c', 'd', 'me'),
      third: fc.integer({ min: 0, max: 20 }),
      len: fc.integer({ min: 22, max: 26 }),
      age: fc.integer({ min: -60_000, max: 60_000 }),
    });
    fc.assert(
      fc.property(fc.array(arbClaim, { maxLength: 20 }), (raw) => {
        const claims = raw.map((c) => {
          const net = formatPrefix(canonicalPrefix(parsePrefix(`10.8.${c.third}.0/${c.len}`)));
          return claim(c.node, [net], now + c.age);
        });
        let chosen: string[];
        try {
          chosen = chooseSubnets('me', net, claims, opts);
        } catch (e) {
          assert.ok(e instanceof SubnetsExhaustedError);
          return;
        }
        const mine = parsePrefix(chosen[0] ?? '');
        assert.equal(mine.length, 24);
        assert.ok(overlaps(parsePrefix('10.8.0.0/20'), mine));
        // Only the node's own previous subnet may overlap a blocking claim, and only a malformed one (not /24).
        const ownPrevious = claims.some((c) => c.node === 'me' && c.podCIDRs.includes(chosen[0] ?? ''));
        for (const c of claims) {
          if (c.node === 'me' || c.heldUntil + opts.reuseGraceMs <= now) continue;
          for (const t of c.podCIDRs) {
            if (ownPrevious && parsePrefix(t).length !== 24) continue;
            assert.ok(!overlaps(parsePrefix(t), mine), `${chosen[0]} overlaps ${t}`);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});

const good = {
  node: 'node-1.example',
  podCIDRs: ['10.244.1.0/24', 'fd10:244:0:1::/64'],
  expiresAt: now,
  underlayIPs: ['192.168.0.1', 'fd00::1'],
  backend: 'vxlan',
  vtepMAC: 'AA:BB:CC:DD:EE:FF',
};

void describe('validateLease', () => {
  void it('accepts a well-formed lease and canonicalises it', () => {
    const r = validateLease({ ...good, podCIDRs: ['10.244.1.0/24', 'fd10:244:0:1:0:0:0:0/64'], extra: 1 }, dual);
    assert.ok(r.ok);
    assert.deepEqual(r.lease, { ...good, vtepMAC: 'aa:bb:cc:dd:ee:ff' });
  });

  void it('accepts host-gw without a MAC', () => {
    const rest: Record<string, unknown> = { ...good, backend: 'host-gw' };
    delete rest.vtepMAC;
    const r = validateLease(rest);
    assert.ok(r.ok);
    assert.equal('vtepMAC' in r.lease, false);
  });

  const cases: [string, unknown, RegExp][] = [
    ['not an object', 'x', /not a JSON object/],
    ['array', [], /not a JSON object/],
    ['null', null, /not a JSON object/],
    ['bad node name', { ...good, node: 'Node_1' }, /DNS-1123/],
    ['path in node name', { ...good, node: '../etc' }, /DNS-1123/],
    ['missing node', { ...good, node: undefined }, /DNS-1123/],
    ['empty podCIDRs', { ...good, podCIDRs: [] }, /non-empty/],
    ['malformed CIDR', { ...good, podCIDRs: ['10.244.1.0/33'] }, /malformed podCIDR/],
    ['octal CIDR', { ...good, podCIDRs: ['010.244.1.0/24'] }, /malformed podCIDR/],
    ['host bits', { ...good, podCIDRs: ['10.244.1.1/24'] }, /host bits/],
    ['two v4', { ...good, podCIDRs: ['10.244.1.0/24', '10.244.2.0/24'] }, /more than one IPv4 podCIDR/],
    ['outside cluster', { ...good, podCIDRs: ['10.9.1.0/24'] }, /outside the cluster CIDRs/],
    ['family not in cluster', { ...good, podCIDRs: ['fd99::/64'] }, /outside the cluster CIDRs/],
    ['wrong length', { ...good, podCIDRs: ['10.244.1.0/25'] }, /not a \/24/],
    ['bigger than cluster', { ...good, podCIDRs: ['10.0.0.0/8'] }, /outside the cluster CIDRs/],
    ['expiresAt string', { ...good, expiresAt: '1' }, /expiresAt/],
    ['expiresAt NaN', { ...good, expiresAt: Number.NaN }, /expiresAt/],
    ['no underlay', { ...good, underlayIPs: [] }, /underlayIPs/],
    ['bad underlay', { ...good, underlayIPs: ['192.168.0.256'] }, /malformed underlay IP/],
    ['two v4 underlay', { ...good, underlayIPs: ['1.1.1.1', '2.2.2.2'] }, /more than one IPv4 underlay/],
    ['bad backend', { ...good, backend: 'ipip' }, /backend/],
    ['bad MAC', { ...good, vtepMAC: 'aa:bb:cc:dd:ee' }, /malformed vtepMAC/],
    ['multicast MAC', { ...good, vtepMAC: '01:00:5e:00:00:01' }, /not a unicast/],
    ['zero MAC', { ...good, vtepMAC: '00:00:00:00:00:00' }, /not a unicast/],
    ['vxlan without MAC', { ...good, vtepMAC: undefined }, /needs a vtepMAC/],
  ];
  for (const [name, raw, reason] of cases) {
    void it(`rejects: ${name}`, () => {
      const r = validateLease(raw, dual);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.reason, reason);
    });
  }

  void it('checks the node name rules', () => {
    assert.ok(isNodeName('a'));
    assert.ok(isNodeName('kind-worker2.local'));
    assert.ok(!isNodeName('-a'));
    assert.ok(!isNodeName('a-'));
    assert.ok(!isNodeName('a..b'));
    assert.ok(!isNodeName('x'.repeat(64)));
    assert.ok(!isNodeName(''));
  });
});

function lease(node: string, podCIDRs: string[], underlayIPs: string[]): NodeLease {
  return { node, podCIDRs, underlayIPs, backend: 'host-gw', expiresAt: now };
}

void describe('rejectConflicts', () => {
  void it('keeps non-conflicting leases in order', () => {
    const ls = [lease('a', ['10.244.0.0/24'], ['192.168.0.1']), lease('b', ['10.244.1.0/24'], ['192.168.0.2'])];
    assert.deepEqual(rejectConflicts(ls), { kept: ls, rejected: [] });
  });

  void it('keeps the first of overlapping subnets and reports the rest', () => {
    const a = lease('a', ['10.244.0.0/24'], ['192.168.0.1']);
    const b = lease('b', ['10.244.0.128/25'], ['192.168.0.2']);
    const c = lease('c', ['10.244.1.0/24', 'fd00::/64'], ['192.168.0.3']);
    const d = lease('d', ['10.244.2.0/24', 'fd00::/48'], ['192.168.0.4']);
    const r = rejectConflicts([a, b, c, d]);
    assert.deepEqual(r.kept, [a, c]);
    assert.deepEqual(r.rejected.map((x) => x.lease.node), ['b', 'd']);
    assert.match(r.rejected[0]?.reason ?? '', /10\.244\.0\.128\/25 overlaps 10\.244\.0\.0\/24 of node a/);
    assert.match(r.rejected[1]?.reason ?? '', /fd00::\/48 overlaps fd00::\/64 of node c/);
  });

  void it('rejects a second node claiming the same underlay address (in any spelling)', () => {
    const a = lease('a', ['10.244.0.0/24'], ['fd00::1']);
    const b = lease('b', ['10.244.1.0/24'], ['fd00:0::0:1']);
    const r = rejectConflicts([a, b]);
    assert.deepEqual(r.kept, [a]);
    assert.match(r.rejected[0]?.reason ?? '', /underlay IP fd00:0::0:1 is already published by node a/);
  });

  void it('decides again on the same lease objects, and sees a changed lease (a new object)', () => {
    const a = lease('a', ['10.244.0.0/24'], ['192.168.0.1']);
    const b = lease('b', ['10.244.1.0/24'], ['192.168.0.2']);
    assert.deepEqual(rejectConflicts([a, b]).kept, [a, b]);
    assert.deepEqual(rejectConflicts([a, b]).kept, [a, b]);
    const b2 = lease('b', ['10.244.0.0/25'], ['192.168.0.2']);
    assert.deepEqual(rejectConflicts([a, b2]).rejected.map((x) => x.lease), [b2]);
    assert.deepEqual(rejectConflicts([b2, a]).kept, [b2]);
  });

  void it('rejects a duplicate node name', () => {
    const a = lease('a', ['10.244.0.0/24'], ['192.168.0.1']);
    const a2 = lease('a', ['10.244.5.0/24'], ['192.168.0.9']);
    const r = rejectConflicts([a, a2]);
    assert.deepEqual(r.kept, [a]);
    assert.match(r.rejected[0]?.reason ?? '', /appears twice/);
  });

  void it('does not let a rejected lease block later ones', () => {
    const a = lease('a', ['10.244.0.0/23'], ['192.168.0.1']);
    const b = lease('b', ['10.244.1.0/24'], ['192.168.0.2']);
    const c = lease('c', ['10.244.9.0/24'], ['192.168.0.2']);
    const r = rejectConflicts([a, b, c]);
    assert.deepEqual(r.kept.map((x) => x.node), ['a', 'c']);
  });
});
