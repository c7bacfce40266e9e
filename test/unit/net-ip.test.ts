import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  contains, formatIP, formatPrefix, isNetwork, lastOf, networkOf, nthSubnet, overlaps, parseIP, parsePrefix, subnetCount, tryParseIP, tryParsePrefix,
} from '../../src/net/ip.ts';

test('IPv4 parsing is strict: no octal, shorthand, junk or out-of-range octets', () => {
  for (const bad of ['010.1.1.1', '10.1', '10.1.1.256', '10.1.1.1 ', ' 10.1.1.1', '10.1.1.1/24', '1.2.3.4.5', '', '10..1.1', '0x1.1.1.1']) {
    assert.equal(tryParseIP(bad), undefined, bad);
  }
  assert.equal(formatIP(parseIP('10.244.0.1')), '10.244.0.1');
  assert.equal(parseIP('255.255.255.255').value, 0xffffffffn);
});

test('IPv6 parsing and RFC 5952 formatting', () => {
  const cases: [string, string][] = [
    ['fd00:0:0:0:0:0:0:1', 'fd00::1'],
    ['FD00::1', 'fd00::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::ffff:10.1.2.3', '::ffff:a01:203'],
  ];
  for (const [input, want] of cases) assert.equal(formatIP(parseIP(input)), want, input);
  for (const bad of ['fd00:::1', '1:2:3:4:5:6:7:8:9', 'fd00::1::2', 'g::1', 'fd00::1%eth0', '12345::1']) {
    assert.equal(tryParseIP(bad), undefined, bad);
  }
});

test('prefix math: network, last, contains, overlaps', () => {
  const p = parsePrefix('10.244.1.7/24');
  assert.equal(formatIP(networkOf(p)), '10.244.1.0');
  assert.equal(formatIP(lastOf(p)), '10.244.1.255');
  assert.equal(isNetwork(p), false);
  assert.equal(isNetwork(parsePrefix('10.244.1.0/24')), true);
  assert.ok(contains(parsePrefix('10.244.0.0/16'), parseIP('10.244.200.3')));
  assert.ok(!contains(parsePrefix('10.244.0.0/16'), parseIP('10.245.0.1')));
  assert.ok(!contains(parsePrefix('10.244.0.0/16'), parseIP('fd00::1')));
  assert.ok(overlaps(parsePrefix('10.0.0.0/8'), parsePrefix('10.1.0.0/16')));
  assert.ok(!overlaps(parsePrefix('10.1.0.0/16'), parsePrefix('10.2.0.0/16')));
  assert.equal(tryParsePrefix('10.0.0.0/33'), undefined);
  assert.equal(tryParsePrefix('10.0.0.0/024'), undefined);
  assert.equal(tryParsePrefix('fd00::/129'), undefined);
});

test('carving node subnets out of a cluster CIDR', () => {
  const cluster = parsePrefix('10.244.0.0/16');
  assert.equal(subnetCount(cluster, 24), 256n);
  assert.equal(formatPrefix(nthSubnet(cluster, 24, 0n)), '10.244.0.0/24');
  assert.equal(formatPrefix(nthSubnet(cluster, 24, 255n)), '10.244.255.0/24');
  assert.throws(() => nthSubnet(cluster, 24, 256n));
  const v6 = parsePrefix('fd00:10:244::/56');
  assert.equal(formatPrefix(nthSubnet(v6, 64, 3n)), 'fd00:10:244:3::/64');
});
