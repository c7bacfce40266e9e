// How the Kubernetes store reads a Node object as a lease (pure; the store itself is tested against the
// stand-in API server in test/integration/store-kubernetes.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ANNOTATION, leaseOfNode } from '../../src/store/kubernetes.ts';
import type { ClusterNetwork } from '../../src/store/types.ts';

const network: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16', 'fd10:244::/56'], nodePrefixLength: { 4: 24, 6: 64 } };
const published = { [ANNOTATION.underlayIPs]: '192.168.0.1,fd00::1', [ANNOTATION.backend]: 'host-gw' };

test('a Node with podCIDRs and flatnet annotations is a lease held while the Node exists', () => {
  const r = leaseOfNode({ metadata: { name: 'n1', annotations: published }, spec: { podCIDRs: ['10.244.3.0/24', 'fd10:244:0:3::/64'] } }, network);
  assert.equal(r.kind, 'lease');
  if (r.kind !== 'lease') return;
  assert.deepEqual(r.lease.podCIDRs, ['10.244.3.0/24', 'fd10:244:0:3::/64']);
  assert.deepEqual(r.lease.underlayIPs, ['192.168.0.1', 'fd00::1']);
  assert.equal(r.lease.expiresAt, Number.MAX_SAFE_INTEGER);
  assert.equal(r.lease.vtepMAC, undefined);
});

test('the older single spec.podCIDR counts when spec.podCIDRs is absent', () => {
  const r = leaseOfNode({ metadata: { name: 'n1', annotations: published }, spec: { podCIDR: '10.244.4.0/24' } }, network);
  assert.equal(r.kind === 'lease' && r.lease.podCIDRs.join(), '10.244.4.0/24');
});

test('a Node no agent has published is not an error; a published one without podCIDRs is', () => {
  assert.deepEqual(leaseOfNode({ metadata: { name: 'n1', annotations: { 'example.com/x': 'y' } }, spec: { podCIDRs: ['10.244.5.0/24'] } }, network), { kind: 'unpublished' });
  assert.deepEqual(leaseOfNode({ metadata: { name: 'n1', annotations: null }, spec: {} }, network), { kind: 'unpublished' });
  const r = leaseOfNode({ metadata: { name: 'n1', annotations: published }, spec: {} }, network);
  assert.equal(r.kind, 'invalid');
  assert.match(r.kind === 'invalid' ? r.reason : '', /no spec\.podCIDRs/);
});

test('bad records are invalid with the reason validateLease gives', () => {
  const node = (annotations: Record<string, unknown>, podCIDRs = ['10.244.6.0/24']) => ({ metadata: { name: 'n1', annotations }, spec: { podCIDRs } });
  const reasonOf = (n: ReturnType<typeof node>): string => {
    const r = leaseOfNode(n, network);
    return r.kind === 'invalid' ? r.reason : `not invalid: ${r.kind}`;
  };
  assert.match(reasonOf(node({ ...published, [ANNOTATION.underlayIPs]: '192.168.0.1;reboot' })), /malformed underlay IP/);
  assert.match(reasonOf(node({ ...published, [ANNOTATION.backend]: 'wireguard' })), /backend/);
  assert.match(reasonOf(node({ ...published, [ANNOTATION.backend]: 'vxlan' })), /vxlan backend needs a vtepMAC/);
  assert.match(reasonOf(node(published, ['10.99.0.0/24'])), /outside the cluster CIDRs/);
  assert.match(reasonOf(node(published, ['10.244.6.0/25'])), /is not a \/24/);
});

test('a vtep-mac annotation of null (a merge patch removing it) is absent, not malformed', () => {
  const r = leaseOfNode({ metadata: { name: 'n1', annotations: { ...published, [ANNOTATION.vtepMAC]: null } }, spec: { podCIDRs: ['10.244.7.0/24'] } }, network);
  assert.equal(r.kind, 'lease');
});
