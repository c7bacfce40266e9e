// IPAM delegation to Debian's reference host-local and static plugins (they speak up to 1.0.0): the pod
// gets the delegate's address, DEL releases it in host-local's own dataDir, and a delegate's failure
// leaves no veth behind and surfaces the delegate's error code in our error JSON.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { hostVethName } from '../../src/plugin/names.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';
import { callPlugin, netnsPath } from '../tools/cni.ts';

const VERSION = '1.0.0';

describe('IPAM delegated to reference plugins', () => {
  const s = new Scratch();
  let node = '';
  let dataDir = '';
  const links = async (ns: string) => (JSON.parse(await inNs(ns, ['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
  /** host-local's reservations for network `net`: file name = IP, first line = container ID. */
  const hostLocal = (net: string): Record<string, string> => {
    const dir = join(dataDir, net);
    if (!existsSync(dir)) return {};
    const out: Record<string, string> = {};
    for (const f of readdirSync(dir)) {
      if (f === 'lock' || f.startsWith('last_reserved_ip')) continue;
      out[f] = readFileSync(join(dir, f), 'utf8').split(/\r?\n/)[0]!;
    }
    return out;
  };

  before(async () => {
    for (const p of ['host-local', 'static']) assert.ok(existsSync(`/usr/lib/cni/${p}`), `${p} missing: apt-get install -y containernetworking-plugins`);
    node = await s.netns('node');
    dataDir = s.tempDir('hl');
  });
  after(() => s.cleanup());

  test('host-local: ADD gets its address, CHECK reaches it, DEL releases it in its dataDir', async () => {
    const pod = await s.netns('hl');
    const conf = { cniVersion: VERSION, name: 'fnt-hl', type: 'flatnet', bridge: 'flhl0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.30.0/24' }]], routes: [{ dst: '10.99.128.0/17' }], dataDir } };
    const rt = { node, containerID: 'hl-1', netns: netnsPath(pod) };
    const add = await callPlugin({ ...rt, command: 'ADD', config: conf });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const res = add.json as { ips: { address: string; gateway: string; interface: number }[]; routes: { dst: string; gw?: string }[] };
    assert.deepEqual(res.ips, [{ address: '10.99.30.2/24', gateway: '10.99.30.1', interface: 2 }]);
    assert.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: '10.99.30.1' }, { dst: '10.99.128.0/17', gw: '10.99.30.1' }], 'default route plus IPAM route via the gateway');
    assert.deepEqual(hostLocal('fnt-hl'), { '10.99.30.2': 'hl-1' }, "host-local's own reservation file");
    assert.ok(await canPing(pod, '10.99.30.1'), 'pod reaches the bridge gateway');
    const chk = await callPlugin({ ...rt, command: 'CHECK', config: { ...conf, prevResult: add.json } });
    assert.equal(chk.code, 0, chk.stdout);
    const del = await callPlugin({ ...rt, command: 'DEL', config: { ...conf, prevResult: add.json } });
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(hostLocal('fnt-hl'), {}, 'released in host-local dataDir');
    assert.ok(!(await links(node)).includes(hostVethName('hl-1', 'eth0')));
    const again = await callPlugin({ ...rt, command: 'DEL', config: conf, netns: '' });
    assert.equal(again.code, 0, 'second DEL with empty netns');
  });

  test('static: ADD gets the configured address and gateway, DEL succeeds', async () => {
    const pod = await s.netns('st');
    const conf = { cniVersion: VERSION, name: 'fnt-st', type: 'flatnet', bridge: 'flst0', ipam: { type: 'static', addresses: [{ address: '10.99.31.5/24', gateway: '10.99.31.1' }] } };
    const rt = { node, containerID: 'st-1', netns: netnsPath(pod) };
    const add = await callPlugin({ ...rt, command: 'ADD', config: conf });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual((add.json as { ips: unknown[] }).ips, [{ address: '10.99.31.5/24', gateway: '10.99.31.1', interface: 2 }]);
    const addr = await inNs(pod, ['ip', '-j', 'addr', 'show', 'dev', 'eth0']);
    assert.match(addr, /"local":"10\.99\.31\.5","prefixlen":24/);
    assert.ok(await canPing(pod, '10.99.31.1'));
    const del = await callPlugin({ ...rt, command: 'DEL', config: { ...conf, prevResult: add.json } });
    assert.equal(del.code, 0, del.stdout);
    assert.ok(!(await links(node)).includes(hostVethName('st-1', 'eth0')));
    assert.ok(!(await links(pod)).includes('eth0'));
  });

  test("a delegate's failure (host-local, exhausted /30) leaves no veth and returns the delegate's code", async () => {
    const conf = { cniVersion: VERSION, name: 'fnt-ex', type: 'flatnet', bridge: 'flex0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.32.0/30' }]], dataDir } };
    const [p1, p2] = [await s.netns('ex1'), await s.netns('ex2')];
    const first = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'ex-1', netns: netnsPath(p1) });
    assert.equal(first.code, 0, first.stdout);
    // What host-local itself answers for the exhausted range, to compare with what we relay.
    const direct = await callPlugin({ node, command: 'ADD', plugin: '/usr/lib/cni/host-local', config: conf, containerID: 'ex-direct', netns: netnsPath(p2) });
    assert.equal(direct.code, 1);
    const second = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'ex-2', netns: netnsPath(p2) });
    assert.equal(second.code, 1, second.stdout);
    assert.equal(second.json!['code'], direct.json!['code'], "the delegate's error code");
    assert.match(String(second.json!['msg']), /host-local/);
    assert.ok(String(second.json!['msg']).includes(String(direct.json!['msg'])), `delegate's message relayed: ${second.stdout}`);
    assert.equal(second.json!['cniVersion'], VERSION);
    assert.ok(!(await links(node)).includes(hostVethName('ex-2', 'eth0')), 'no host veth left');
    assert.ok(!(await links(p2)).includes('eth0'), 'no pod interface left');
    assert.deepEqual(hostLocal('fnt-ex'), { '10.99.32.2': 'ex-1' }, 'only the first pod holds an address');
    assert.equal((await callPlugin({ node, command: 'DEL', config: conf, containerID: 'ex-1', netns: netnsPath(p1) })).code, 0);
    assert.deepEqual(hostLocal('fnt-ex'), {});
  });
});
