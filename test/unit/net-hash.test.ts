// The hash behind host veth names and the IPAM's owner index: those names outlive the plugin that made
// them (on disk, in the kernel), so an upgrade must compute exactly the same ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fnv1a64 } from '../../src/net/hash.ts';
import { hostVethName } from '../../src/plugin/names.ts';
import { indexName } from '../../src/ipam/disk-store.ts';

const fnv1a64Hex = (text: string): string => fnv1a64(text).toString(16).padStart(16, '0');

test('published FNV-1a 64 vectors', () => {
  assert.equal(fnv1a64Hex(''), 'cbf29ce484222325');
  assert.equal(fnv1a64Hex('a'), 'af63dc4c8601ec8c');
  assert.equal(fnv1a64Hex('foobar'), '85944171f73967e8');
});

test('the names already out there stay the same', () => {
  // As every flatnet so far has made them (nodes hold them in the kernel and in IPAM directories).
  assert.equal(hostVethName('0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 'eth0'), 'flv455df2d13c4a');
  assert.equal(indexName({ containerID: 'pod-1', ifname: 'eth0' }, '10.1.0.2'), '.flatnet-owner-1fd1704b103981e5-10.1.0.2');
});

test('UTF-8 bytes are hashed, not UTF-16 units', () => {
  // "é" is c3 a9 in UTF-8: hashing those two bytes by hand gives the same value.
  let h = 0xcbf29ce484222325n;
  for (const byte of [0xc3, 0xa9]) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  assert.equal(fnv1a64('é'), h);
});
