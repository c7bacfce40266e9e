import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Result, formatResult, parseResult } from '../../src/cni/result.ts';

const full: Result = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'flat0', mac: '02:00:00:00:00:01' }, { name: 'flv1', mac: '02:00:00:00:00:02' }, { name: 'eth0', mac: '02:00:00:00:00:03', mtu: 1450, sandbox: '/run/netns/p' }],
  ips: [{ address: '10.99.0.2/24', gateway: '10.99.0.1', interface: 2 }, { address: 'fd00:99::2/64', gateway: 'fd00:99::1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.99.0.1', mtu: 1400 }],
  dns: { nameservers: ['10.96.0.10'] },
};

test('1.1.0 keeps interface mtu and route attributes', () => {
  const out = formatResult(full, '1.1.0') as { interfaces: { mtu?: number }[]; routes: { mtu?: number }[] };
  assert.equal(out.interfaces[2]?.mtu, 1450);
  assert.equal(out.routes[0]?.mtu, 1400);
});

test('1.0.0 drops 1.1-only fields and has no ips[].version', () => {
  const out = formatResult(full, '1.0.0') as { cniVersion: string; interfaces: Record<string, unknown>[]; ips: Record<string, unknown>[]; routes: Record<string, unknown>[] };
  assert.equal(out.cniVersion, '1.0.0');
  assert.equal('mtu' in out.interfaces[2]!, false);
  assert.equal('mtu' in out.routes[0]!, false);
  assert.equal('version' in out.ips[0]!, false);
});

for (const v of ['0.3.0', '0.3.1', '0.4.0']) {
  test(`${v} requires ips[].version`, () => {
    const out = formatResult(full, v) as { ips: { version: string }[] };
    assert.deepEqual(out.ips.map((i) => i.version), ['4', '6']);
  });
}

test('a result of any version reads back into the same shape', () => {
  for (const v of ['0.3.0', '0.4.0', '1.0.0', '1.1.0']) {
    const back = parseResult(JSON.parse(JSON.stringify(formatResult(full, v))), 'prevResult');
    assert.deepEqual(back.ips, full.ips, v);
    assert.equal(back.interfaces?.[2]?.sandbox, '/run/netns/p');
  }
  assert.throws(() => parseResult({ cniVersion: '1.0.0', ips: [{ address: 'nope' }] }, 'prevResult'), /prevResult\.ips\[0\]\.address/);
});

test('empty dns is omitted', () => {
  const out = formatResult({ ...full, dns: {} }, '1.1.0');
  assert.equal('dns' in out, false);
});
