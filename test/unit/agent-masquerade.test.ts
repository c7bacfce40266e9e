import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MasqueradeConfigError, fingerprintNftTable, renderMasquerade } from '../../src/agent/masquerade.ts';

const input = { clusterCIDRs: ['10.99.0.0/16', 'fd00:99::/48'], podCIDRs: ['10.99.1.0/24', 'fd00:99:0:1::/64'] };

test('renders the whole table: safe delete first, sets, one masquerade rule per family, forward accepts (unhooked)', () => {
  const s = renderMasquerade(input);
  const lines = s.split('\n').map((l) => l.trim());
  assert.deepEqual(lines.slice(0, 3), ['table inet flatnet', 'delete table inet flatnet', 'table inet flatnet {']);
  assert.ok(lines.includes('elements = { 10.99.0.0/16 }'));
  assert.ok(lines.includes('elements = { fd00:99::/48 }'));
  assert.ok(lines.includes('ip saddr 10.99.1.0/24 ip daddr != @cluster4 masquerade fully-random'));
  assert.ok(lines.includes('ip6 saddr fd00:99:0:1::/64 ip6 daddr != @cluster6 masquerade fully-random'));
  for (const r of ['ip saddr 10.99.0.0/16 accept', 'ip daddr 10.99.0.0/16 accept', 'ip6 saddr fd00:99::/48 accept', 'ip6 daddr fd00:99::/48 accept']) {
    assert.ok(lines.includes(r), r);
  }
  assert.ok(lines.includes('type nat hook postrouting priority srcnat; policy accept;'));
  // The forward chain is a regular chain: hooked, its accepts would decide nothing and cost every packet.
  assert.ok(lines.includes('chain forward {'));
  assert.ok(!s.includes('hook forward'));
  assert.equal(lines.filter((l) => / (masquerade|accept)$/.test(l) || l.endsWith('fully-random')).length, 6);
});

test('single-stack renders an empty set for the other family and no rules for it', () => {
  const s = renderMasquerade({ clusterCIDRs: ['10.99.0.0/16'], podCIDRs: ['10.99.1.0/24'] });
  assert.ok(s.includes('set cluster6 {'));
  assert.ok(!s.includes('ip6 saddr'));
  assert.ok(!s.includes('@cluster6'));
});

test('rejects malformed input before nft ever sees it', () => {
  for (const bad of [
    { clusterCIDRs: ['10.99.0.0/16'], podCIDRs: ['10.99.1.0/24; flush ruleset'] },
    { clusterCIDRs: ['example.com/16'], podCIDRs: [] },
    { clusterCIDRs: ['10.99.0.1/16'], podCIDRs: [] },
    { clusterCIDRs: ['10.99.0.0/16'], podCIDRs: ['10.98.1.0/24'] },
  ]) {
    assert.throws(() => renderMasquerade(bad), MasqueradeConfigError);
  }
});

test('the rule count does not grow with the cluster size (peers are not an input at all)', () => {
  // The only per-node input is this node's subnet; other nodes are covered by the cluster CIDR set.
  const a = renderMasquerade(input);
  const b = renderMasquerade({ ...input, podCIDRs: ['10.99.200.0/24', 'fd00:99:0:c8::/64'] });
  assert.equal(a.split('\n').length, b.split('\n').length);
});

test('fingerprint ignores handles and metainfo, sees content', () => {
  const t = (handle: number, elem: string): unknown => ({
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'flatnet', handle } },
      { set: { name: 'cluster4', handle: handle + 1, elem: [{ prefix: { addr: elem, len: 16 } }] } },
    ],
  });
  assert.equal(fingerprintNftTable(t(1, '10.99.0.0')), fingerprintNftTable(t(7, '10.99.0.0')));
  assert.notEqual(fingerprintNftTable(t(1, '10.99.0.0')), fingerprintNftTable(t(1, '10.98.0.0')));
  assert.equal(fingerprintNftTable(undefined), undefined);
});
