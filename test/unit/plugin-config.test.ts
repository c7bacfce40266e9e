import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CniError } from '../../src/cni/errors.ts';
import { parseNetConf } from '../../src/plugin/config.ts';
import { podRoutes } from '../../src/plugin/add.ts';
import { hostVethName } from '../../src/plugin/names.ts';

const base = { cniVersion: '1.1.0', name: 'net1', type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]] } };

function codeOf(c: Record<string, unknown>): { code: number; msg: string } {
  try {
    parseNetConf(c, '1.1.0');
  } catch (e) {
    assert.ok(e instanceof CniError);
    return { code: e.code, msg: e.message };
  }
  assert.fail('expected an error');
}

test('defaults: bridge flat0, mtu 1500, gateway and default gateway on, host-local dataDir', () => {
  const c = parseNetConf(base, '1.1.0');
  assert.equal(c.bridge, 'flat0');
  assert.equal(c.mtu, 1500);
  assert.equal(c.isGateway, true);
  assert.equal(c.isDefaultGateway, true);
  assert.equal(c.ipam.kind === 'builtin' && c.ipam.dataDir, '/var/lib/cni/networks');
});

test('unknown keys are refused with code 2 naming the key', () => {
  const e = codeOf({ ...base, isgateway: true });
  assert.equal(e.code, 2);
  assert.match(e.msg, /"isgateway"/);
  assert.equal(codeOf({ ...base, ipam: { ...base.ipam, resolvConf: '/etc/resolv.conf' } }).code, 2);
  assert.equal(codeOf({ ...base, ipMasq: true }).code, 2);
  assert.doesNotThrow(() => parseNetConf({ ...base, ipMasq: false, capabilities: { ips: true }, 'cni.dev/foo': 1 }, '1.1.0'));
});

test('bad values are refused with code 7 naming the field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, mtu: 40 }, /"mtu"/],
    [{ ...base, mtu: '1500' }, /"mtu"/],
    [{ ...base, bridge: 'br/../x' }, /"bridge"/],
    [{ ...base, isGateway: 'yes' }, /"isGateway"/],
    [{ ...base, ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: 'relative' } }, /ipam\.dataDir/],
    [{ ...base, ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: '/var/lib/../../etc' } }, /ipam\.dataDir/],
    [{ ...base, ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]], routes: [{ dst: 'x' }] } }, /ipam\.routes\[0\]/],
    [{ ...base, runtimeConfig: { ips: ['not-an-ip'] } }, /runtimeConfig\.ips\[0\]/],
    [{ ...base, runtimeConfig: { mac: 'zz' } }, /runtimeConfig\.mac/],
    [{ ...base, dns: { nameservers: ['x'] } }, /dns\.nameservers\[0\]/],
    [{ ...base, ipam: { type: '../evil' } }, /ipam\.type/],
    [{ ...base, ipam: undefined }, /ipam/],
    [{ ...base, mtu: 1000, ipam: { ranges: [[{ subnet: 'fd00::/64' }]] } }, /1280/],
  ];
  for (const [c, re] of cases) {
    const e = codeOf(c);
    assert.equal(e.code, 7, JSON.stringify(c));
    assert.match(e.msg, re);
  }
});

test('GC attachments: the valid-attachments key, the older key, or none', () => {
  const a = [{ containerID: 'c1', ifname: 'eth0' }];
  assert.deepEqual(parseNetConf({ ...base, 'cni.dev/valid-attachments': a }, '1.1.0').validAttachments, a);
  assert.deepEqual(parseNetConf({ ...base, 'cni.dev/attachments': a }, '1.1.0').validAttachments, a);
  assert.equal(parseNetConf(base, '1.1.0').validAttachments, undefined);
});

test('routes: default per family via the gateway, IPAM routes get the family gateway', () => {
  const conf = parseNetConf({ ...base, ipam: { ...base.ipam, routes: [{ dst: '10.244.0.0/16' }, { dst: 'fd00:1::/48' }] } }, '1.1.0');
  const routes = podRoutes(conf, [{ family: 4, address: '10.99.0.2/24', gateway: '10.99.0.1' }], conf.ipam.kind === 'builtin' ? conf.ipam.routes : []);
  assert.deepEqual(routes, [
    { dst: '0.0.0.0/0', gw: '10.99.0.1' },
    { dst: '10.244.0.0/16', gw: '10.99.0.1' },
  ]);
});

test('host veth names are deterministic, prefixed and fit IFNAMSIZ', () => {
  const a = hostVethName('c1', 'eth0');
  assert.equal(a, hostVethName('c1', 'eth0'));
  assert.notEqual(a, hostVethName('c1', 'eth1'));
  assert.match(a, /^flv[0-9a-f]{12}$/);
});
