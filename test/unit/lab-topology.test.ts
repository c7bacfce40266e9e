// The lab's address plan and names: pure, no root.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  LabOptionsError,
  agentArgs,
  choosePodName,
  expectReachable,
  nextNodeIndex,
  nodeIndexOf,
  planFabric,
  planNode,
  planOutside,
  validateOptions,
  validatePrefix,
} from '../../src/lab/topology.ts';
import type { LabOptions } from '../../src/lab/topology.ts';

const base: LabOptions = { nodes: 3, pods: 2, backend: 'host-gw', store: 'embedded', ipv6: false, topology: 'flat', prefix: 'fnl-', root: '/run/flatnet-lab' };

describe('lab topology', () => {
  it('numbers nodes on fab0 from .11 in a flat lab', () => {
    const n1 = planNode(1, base);
    assert.deepEqual([n1.name, n1.netns, n1.segment.bridge, n1.underlayIPs, n1.fabricPort], ['n1', 'fnl-n1', 'fab0', ['172.29.0.11'], 'fab-n1']);
    assert.deepEqual(planNode(3, base).underlayIPs, ['172.29.0.13']);
    assert.equal(planNode(2, base).segment.gatewayV4, '172.29.0.1');
  });

  it('puts odd nodes on fab0 and even nodes on fab1 when routed', () => {
    const o = { ...base, topology: 'routed' as const, ipv6: true };
    const [n1, n2, n3, n4] = [1, 2, 3, 4].map((i) => planNode(i, o));
    assert.deepEqual(n1!.underlayIPs, ['172.29.0.11', 'fd00:172:29::11']);
    assert.deepEqual(n2!.underlayIPs, ['172.29.1.12', 'fd00:172:29:1::12']);
    assert.equal(n2!.segment.bridge, 'fab1');
    assert.equal(n2!.segment.gatewayV6, 'fd00:172:29:1::1');
    assert.equal(n3!.segment.bridge, 'fab0');
    assert.equal(n4!.segment.bridge, 'fab1');
    assert.deepEqual(planFabric(o).segments.map((s) => s.cidrV4), ['172.29.0.0/24', '172.29.1.0/24']);
  });

  it('host-gw reaches only peers on the same segment; vxlan reaches all', () => {
    const o = { ...base, topology: 'routed' as const };
    const [n1, n2, n3] = [1, 2, 3].map((i) => planNode(i, o));
    assert.equal(expectReachable('host-gw', n1!, n3!), true);
    assert.equal(expectReachable('host-gw', n1!, n2!), false);
    assert.equal(expectReachable('vxlan', n1!, n2!), true);
    assert.equal(expectReachable('host-gw', planNode(1, base), planNode(2, base)), true);
  });

  it('gives the outside host documentation addresses and the fabric .1', () => {
    assert.deepEqual(planOutside({ prefix: 'fnl-', ipv6: true }), {
      netns: 'fnl-out',
      ips: ['203.0.113.10', '2001:db8:ff::10'],
      fabricIPs: ['203.0.113.1', '2001:db8:ff::1'],
      fabricPort: 'out0',
      cidrV4: '203.0.113.0/24',
      cidrV6: '2001:db8:ff::/64',
    });
  });

  it('names pods after their node and fills the first free p<k>', () => {
    assert.equal(choosePodName('fnl-', 'n1', []), 'fnl-n1-p1');
    assert.equal(choosePodName('fnl-', 'n1', ['fnl-n1-p1', 'fnl-n1-p3']), 'fnl-n1-p2');
    assert.equal(choosePodName('fnl-', 'n2', [], 'web'), 'fnl-n2-web');
    assert.equal(choosePodName('fnl-', 'n2', [], 'fnl-n2-web'), 'fnl-n2-web');
    assert.throws(() => choosePodName('fnl-', 'n2', ['fnl-n2-web'], 'web'), LabOptionsError);
    assert.throws(() => choosePodName('fnl-', 'n2', [], 'Bad Name'), LabOptionsError);
  });

  it('reuses the lowest free node number', () => {
    assert.equal(nextNodeIndex([1, 2, 3]), 4);
    assert.equal(nextNodeIndex([1, 3]), 2);
    assert.equal(nodeIndexOf('n12'), 12);
    assert.equal(nodeIndexOf('fnl-n1'), undefined);
  });

  it('validates prefixes and options', () => {
    validatePrefix('fnl-');
    validatePrefix('fnt1a2b-');
    for (const bad of ['fnl', '-', 'FNL-', 'a/b-', 'waytoolongprefix-', '']) assert.throws(() => validatePrefix(bad), LabOptionsError, bad);
    assert.throws(() => validateOptions({ ...base, nodes: 0 }), LabOptionsError);
    assert.throws(() => validateOptions({ ...base, root: '/' }), LabOptionsError);
    assert.throws(() => validateOptions({ ...base, root: 'relative' }), LabOptionsError);
  });

  it('builds the agent command line from the contract', () => {
    const o = { ...base, store: 'etcd' as const, ipv6: true, backend: 'vxlan' as const, root: '/tmp/lab' };
    assert.deepEqual(agentArgs(planNode(2, o), o), [
      '--node', 'n2',
      '--cluster-cidr', '10.244.0.0/16',
      '--cluster-cidr', 'fd00:10:244::/56',
      '--node-prefix-v4', '24',
      '--node-prefix-v6', '64',
      '--backend', 'vxlan',
      '--store', 'etcd', '--etcd-endpoints', 'https://172.29.0.1:2379',
      '--etcd-cafile', '/tmp/lab/etcd-pki/ca.crt', '--etcd-certfile', '/tmp/lab/etcd-pki/client-n2.crt', '--etcd-keyfile', '/tmp/lab/etcd-pki/client-n2.key',
      '--uplink', 'eth0',
      '--cni-conf-dir', '/tmp/lab/n2/net.d',
      '--ipam-data-dir', '/tmp/lab/n2/ipam',
      '--listen', 'unix:/tmp/lab/n2/agent.sock',
      '--resync', '5',
      '--lease-ttl', '30',
      '--log-format', 'json',
    ]);
    assert.deepEqual(agentArgs(planNode(1, base), base).slice(8, 12), ['--store', 'embedded', '--store-dir', '/run/flatnet-lab/store']);
  });
});
