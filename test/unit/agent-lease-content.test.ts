import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COMPARED_FIELDS, sameLeaseContent, sameListingContent } from '../../src/agent/lease-content.ts';
import type { NodeLease } from '../../src/store/types.ts';

const n1: NodeLease = { node: 'n1', podCIDRs: ['10.244.0.0/24'], underlayIPs: ['172.29.0.11'], backend: 'host-gw', expiresAt: 1000 };
const n2: NodeLease = { node: 'n2', podCIDRs: ['10.244.1.0/24', 'fd10:244:0:1::/64'], underlayIPs: ['172.29.0.12'], backend: 'vxlan', vtepMAC: '02:00:00:00:00:02', expiresAt: 1000 };

test('a renewal (only the expiry moved) is no change; every other field is', () => {
  assert.ok(sameLeaseContent(n1, { ...n1, expiresAt: 99_999 }));
  const changed: NodeLease[] = [
    { ...n2, node: 'n3' },
    { ...n2, podCIDRs: ['10.244.1.0/24'] },
    { ...n2, podCIDRs: ['10.244.2.0/24', 'fd10:244:0:1::/64'] },
    { ...n2, underlayIPs: ['172.29.0.99'] },
    { ...n2, underlayIPs: ['172.29.0.12', 'fd00::12'] },
    { ...n2, backend: 'host-gw' },
    { ...n2, vtepMAC: '02:00:00:00:00:03' },
  ];
  for (const c of changed) assert.equal(sameLeaseContent(n2, c), false, JSON.stringify(c));
  const withoutMac: NodeLease = { node: n2.node, podCIDRs: n2.podCIDRs, underlayIPs: n2.underlayIPs, backend: n2.backend, expiresAt: n2.expiresAt };
  assert.equal(sameLeaseContent(n2, withoutMac), false, 'a vtepMAC that disappears');
});

test('listings: same leases in the same order, expiry aside', () => {
  const renewed = [{ ...n1, expiresAt: 5000 }, { ...n2, expiresAt: 6000 }];
  assert.ok(sameListingContent([n1, n2], renewed));
  assert.equal(sameListingContent([n1, n2], [n1]), false, 'a lease gone (expired or released)');
  assert.equal(sameListingContent([n1], [n1, n2]), false, 'a lease added');
  assert.equal(sameListingContent([n1, n2], [n2, n1]), false, 'reordered: treated as a change (a full reconcile is always safe)');
});

test('every field of a lease is either compared or deliberately ignored, and only the expiry is ignored', () => {
  // COMPARED_FIELDS must name every NodeLease key (the compiler checks that); this pins the decision.
  const ignored = Object.entries(COMPARED_FIELDS).filter(([, compared]) => !compared).map(([k]) => k);
  assert.deepEqual(ignored, ['expiresAt']);
  assert.deepEqual(Object.keys(COMPARED_FIELDS).sort(), Object.keys(n2).sort());
});
