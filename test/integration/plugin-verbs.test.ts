// The plugin's verbs against the real kernel, for every supported version: each test builds a "node"
// namespace (where the plugin runs and the bridge lives) and pod namespaces, and removes them afterwards.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SUPPORTED_VERSIONS, versionAtLeast } from '../../src/cni/version.ts';
import { hostVethName } from '../../src/plugin/names.ts';
import { run, runOk } from '../../src/linux/run.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';
import { callPlugin, netnsPath } from '../tools/cni.ts';

function netconf(dataDir: string, version: string, extra: Record<string, unknown> = {}, ranges: unknown = [[{ subnet: '10.99.0.0/24' }], [{ subnet: 'fd00:99::/64' }]]) {
  return { cniVersion: version, name: 'fnt-net', type: 'flatnet', mtu: 1400, hairpinMode: true, ipam: { ranges, dataDir }, ...extra };
}

async function links(ns: string): Promise<string[]> {
  const out = await inNs(ns, ['ip', '-j', 'link', 'show']);
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname);
}

function reservations(dataDir: string): string[] {
  const dir = join(dataDir, 'fnt-net');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/.test(f) && (f.includes('.') || f.includes(':'))).sort();
}

describe('plugin verbs on a real kernel', () => {
  const s = new Scratch();
  let node = '';
  let dataDir = '';
  before(async () => {
    node = await s.netns('node');
    dataDir = s.tempDir('ipam');
  });
  after(() => s.cleanup());

  for (const version of SUPPORTED_VERSIONS) {
    test(`ADD, CHECK, DEL, DEL again in ${version} (dual-stack)`, async () => {
      const pod = await s.netns(`v${version.replace(/\./g, '')}`);
      const cid = `cid-${version}`;
      const conf = netconf(dataDir, version);
      const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: cid, netns: netnsPath(pod) });
      assert.equal(add.code, 0, add.stdout + add.stderr);
      const res = add.json as { cniVersion: string; interfaces: Record<string, unknown>[]; ips: Record<string, unknown>[]; routes: Record<string, unknown>[] };
      assert.equal(res.cniVersion, version);
      assert.equal(res.interfaces.length, 3);
      assert.deepEqual(res.interfaces.map((i) => i['name']), ['flat0', hostVethName(cid, 'eth0'), 'eth0']);
      assert.equal(res.interfaces[2]?.['sandbox'], netnsPath(pod));
      assert.equal('mtu' in res.interfaces[2], versionAtLeast(version, '1.1.0'), 'interface mtu only from 1.1.0');
      assert.equal(res.ips.length, 2);
      for (const ip of res.ips) {
        assert.equal(ip['interface'], 2);
        assert.equal('version' in ip, !versionAtLeast(version, '1.0.0'), 'ips[].version only before 1.0.0');
      }
      // The kernel agrees with the result.
      const addr = await inNs(pod, ['ip', '-j', 'addr', 'show', 'dev', 'eth0']);
      const parsed = JSON.parse(addr) as { mtu: number; address: string; addr_info: { local: string; prefixlen: number }[] }[];
      assert.equal(parsed[0]?.mtu, 1400);
      assert.equal(parsed[0]?.address, res.interfaces[2]?.['mac']);
      const v4 = String(res.ips[0]?.['address']);
      assert.ok(parsed[0]?.addr_info.some((a) => `${a.local}/${a.prefixlen}` === v4), `pod has ${v4}`);
      const hostVeth = JSON.parse(await inNs(node, ['ip', '-j', '-d', 'link', 'show', 'dev', hostVethName(cid, 'eth0')])) as { mtu: number; master: string; linkinfo: { info_slave_data?: { hairpin?: boolean } } }[];
      assert.equal(hostVeth[0]?.mtu, 1400);
      assert.equal(hostVeth[0]?.master, 'flat0');
      assert.equal(hostVeth[0]?.linkinfo.info_slave_data?.hairpin, true);
      assert.ok(await canPing(pod, '10.99.0.1'), 'pod reaches its gateway over IPv4');
      assert.ok(await canPing(pod, 'fd00:99::1'), 'pod reaches its gateway over IPv6');
      assert.ok(await canPing(pod, '10.99.0.1', { size: 1400 - 28 }), 'full-MTU packet with DF set');
      assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== '' , true);
      assert.equal((await inNs(node, ['cat', '/proc/sys/net/ipv4/ip_forward'])).trim(), '1', 'forwarding on in the node');

      if (versionAtLeast(version, '0.4.0')) {
        const check = await callPlugin({ node, command: 'CHECK', config: { ...conf, prevResult: res }, containerID: cid, netns: netnsPath(pod) });
        assert.equal(check.code, 0, check.stdout);
      }
      const before = reservations(dataDir).length;
      const del = await callPlugin({ node, command: 'DEL', config: { ...conf, ...(versionAtLeast(version, '0.4.0') ? { prevResult: res } : {}) }, containerID: cid, netns: netnsPath(pod) });
      assert.equal(del.code, 0, del.stdout);
      assert.equal(del.stdout.trim(), '', 'DEL prints nothing');
      assert.equal(reservations(dataDir).length, before - 2, 'both addresses released');
      assert.ok(!(await links(node)).includes(hostVethName(cid, 'eth0')), 'host veth gone');
      assert.ok(!(await links(pod)).includes('eth0'), 'pod interface gone');
      const again = await callPlugin({ node, command: 'DEL', config: conf, containerID: cid, netns: '' });
      assert.equal(again.code, 0, 'a second DEL with an empty CNI_NETNS succeeds');
    });
  }

  test('two pods on one node reach each other over IPv4 and IPv6 without NAT', async () => {
    const [a, b] = [await s.netns('pa'), await s.netns('pb')];
    const conf = netconf(dataDir, '1.1.0');
    const ra = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'pod-a', netns: netnsPath(a) });
    const rb = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'pod-b', netns: netnsPath(b) });
    assert.equal(ra.code + rb.code, 0, ra.stdout + rb.stdout);
    const ipsB = (rb.json!['ips'] as { address: string }[]).map((i) => i.address.split('/')[0]!);
    for (const ip of ipsB) assert.ok(await canPing(a, ip), `a -> ${ip}`);
    for (const [ns, id] of [[a, 'pod-a'], [b, 'pod-b']] as const) {
      assert.equal((await callPlugin({ node, command: 'DEL', config: conf, containerID: id, netns: netnsPath(ns) })).code, 0);
    }
  });

  test('requested addresses (runtimeConfig.ips, CNI_ARGS IP=, args.cni.ips) and MAC are honoured', async () => {
    const p1 = await s.netns('req1');
    const conf = netconf(dataDir, '1.1.0', { runtimeConfig: { ips: ['10.99.0.200/24'], mac: '02:42:00:00:00:c8' } });
    const r1 = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'req-1', netns: netnsPath(p1) });
    assert.equal(r1.code, 0, r1.stdout);
    assert.equal((r1.json!['ips'] as { address: string }[])[0]?.address, '10.99.0.200/24');
    assert.equal((r1.json!['interfaces'] as { mac: string }[])[2]?.mac, '02:42:00:00:00:c8');
    const p2 = await s.netns('req2');
    const plain = netconf(dataDir, '1.1.0');
    const r2 = await callPlugin({ node, command: 'ADD', config: plain, containerID: 'req-2', netns: netnsPath(p2), args: 'IgnoreUnknown=1;IP=10.99.0.201;K8S_POD_NAME=x' });
    assert.equal(r2.code, 0, r2.stdout);
    assert.equal((r2.json!['ips'] as { address: string }[])[0]?.address, '10.99.0.201/24');
    const p3 = await s.netns('req3');
    const taken = await callPlugin({ node, command: 'ADD', config: plain, containerID: 'req-3', netns: netnsPath(p3), args: 'IP=10.99.0.200' });
    assert.equal(taken.code, 1);
    assert.equal(taken.json!['code'], 100);
    assert.match(String(taken.json!['msg']), /10\.99\.0\.200 is not available/);
    assert.ok(!(await links(node)).includes(hostVethName('req-3', 'eth0')), 'no veth after a refused request');
    const r3 = await callPlugin({ node, command: 'ADD', config: netconf(dataDir, '1.1.0', { args: { cni: { ips: ['fd00:99::abc'] } } }), containerID: 'req-3', netns: netnsPath(p3) });
    assert.equal(r3.code, 0, r3.stdout);
    assert.equal((r3.json!['ips'] as { address: string }[])[1]?.address, 'fd00:99::abc/64');
    for (const [ns, id] of [[p1, 'req-1'], [p2, 'req-2'], [p3, 'req-3']] as const) {
      assert.equal((await callPlugin({ node, command: 'DEL', config: plain, containerID: id, netns: netnsPath(ns) })).code, 0);
    }
  });

  test('a failing ADD leaves nothing behind: interface already in the container', async () => {
    const pod = await s.netns('dup');
    await inNs(pod, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    const before = reservations(dataDir);
    const r = await callPlugin({ node, command: 'ADD', config: netconf(dataDir, '1.1.0'), containerID: 'dup-1', netns: netnsPath(pod) });
    assert.equal(r.code, 1);
    assert.equal(r.json!['code'], 102);
    assert.match(String(r.json!['msg']), /CNI_IFNAME eth0/);
    assert.deepEqual(reservations(dataDir), before, 'no reservation leaked');
    assert.ok(!(await links(node)).includes(hostVethName('dup-1', 'eth0')));
  });

  test('ADD into a namespace that does not exist fails cleanly', async () => {
    const before = reservations(dataDir);
    const r = await callPlugin({ node, command: 'ADD', config: netconf(dataDir, '1.1.0'), containerID: 'nons-1', netns: '/run/netns/fnt-does-not-exist' });
    assert.equal(r.code, 1);
    assert.equal(r.json!['code'], 4);
    assert.match(String(r.json!['msg']), /CNI_NETNS/);
    assert.deepEqual(reservations(dataDir), before);
  });

  test('CHECK names what differs: a missing route, a missing address, a detached veth', async () => {
    const pod = await s.netns('chk');
    const conf = netconf(dataDir, '1.1.0');
    const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'chk-1', netns: netnsPath(pod) });
    assert.equal(add.code, 0);
    const check = () => callPlugin({ node, command: 'CHECK', config: { ...conf, prevResult: add.json }, containerID: 'chk-1', netns: netnsPath(pod) });
    assert.equal((await check()).code, 0);
    await inNs(pod, ['ip', '-6', 'route', 'del', 'default']);
    let c = await check();
    assert.equal(c.code, 1);
    assert.match(String(c.json!['msg']), /route to ::\/0 via fd00:99::1 is missing/);
    await inNs(pod, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:99::1']);
    const v4 = (add.json!['ips'] as { address: string }[])[0]!.address;
    await inNs(pod, ['ip', 'addr', 'del', v4, 'dev', 'eth0']);
    c = await check();
    assert.match(String(c.json!['msg']), new RegExp(`address ${v4.replace(/\./g, '\\.')} is missing`));
    await inNs(pod, ['ip', 'addr', 'add', v4, 'dev', 'eth0']);
    await inNs(pod, ['ip', 'route', 'add', 'default', 'via', '10.99.0.1']);
    assert.equal((await check()).code, 0, 'repaired');
    await inNs(node, ['ip', 'link', 'set', 'dev', hostVethName('chk-1', 'eth0'), 'nomaster']);
    c = await check();
    assert.match(String(c.json!['msg']), /attached to nothing, not flat0/);
    const noPrev = await callPlugin({ node, command: 'CHECK', config: conf, containerID: 'chk-1', netns: netnsPath(pod) });
    assert.equal(noPrev.json!['code'], 7);
    assert.match(String(noPrev.json!['msg']), /prevResult/);
    assert.equal((await callPlugin({ node, command: 'DEL', config: conf, containerID: 'chk-1', netns: netnsPath(pod) })).code, 0);
  });

  test('exhaustion: clear ADD error and STATUS 50, both recover after a DEL', async () => {
    const dd = s.tempDir('small');
    const conf = netconf(dd, '1.1.0', { bridge: 'flat1' }, [[{ subnet: '10.99.7.0/29' }]]);
    const pods: string[] = [];
    for (let i = 0; i < 5; i++) {
      const p = await s.netns(`ex${i}`);
      pods.push(p);
      const r = await callPlugin({ node, command: 'ADD', config: conf, containerID: `ex-${i}`, netns: netnsPath(p) });
      assert.equal(r.code, 0, r.stdout);
    }
    const status = await callPlugin({ node, command: 'STATUS', config: conf });
    assert.equal(status.code, 1);
    assert.equal(status.json!['code'], 50);
    const extra = await s.netns('ex5');
    const r = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'ex-5', netns: netnsPath(extra) });
    assert.equal(r.json!['code'], 100);
    assert.match(String(r.json!['msg']), /no IP addresses available in range set: 10\.99\.7\.1-10\.99\.7\.6/);
    assert.ok(!(await links(extra)).includes('eth0'));
    assert.equal((await callPlugin({ node, command: 'DEL', config: conf, containerID: 'ex-0', netns: netnsPath(pods[0]!) })).code, 0);
    assert.equal((await callPlugin({ node, command: 'STATUS', config: conf })).code, 0);
    assert.equal((await callPlugin({ node, command: 'ADD', config: conf, containerID: 'ex-5', netns: netnsPath(extra) })).code, 0);
    for (let i = 1; i <= 5; i++) await callPlugin({ node, command: 'DEL', config: conf, containerID: `ex-${i}`, netns: '' });
    await inNs(node, ['ip', 'link', 'del', 'flat1']);
  });

  test('an unusable dataDir: ADD fails with code 5 and creates nothing; STATUS says 50', async () => {
    const file = join(s.tempDir('notadir'), 'file');
    writeFileSync(file, 'x');
    const conf = netconf(file, '1.1.0');
    const pod = await s.netns('io');
    const r = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'io-1', netns: netnsPath(pod) });
    assert.equal(r.json!['code'], 5, r.stdout);
    assert.match(String(r.json!['msg']), /IPAM directory/);
    assert.ok(!(await links(pod)).includes('eth0'));
    assert.ok(!(await links(node)).includes(hostVethName('io-1', 'eth0')));
    const st = await callPlugin({ node, command: 'STATUS', config: conf });
    assert.equal(st.json!['code'], 50);
  });

  test('GC releases reservations, temp files and host veths of attachments not in the valid list', async () => {
    const conf = netconf(dataDir, '1.1.0');
    const keep = await s.netns('gck');
    const drop = await s.netns('gcd');
    assert.equal((await callPlugin({ node, command: 'ADD', config: conf, containerID: 'gc-keep', netns: netnsPath(keep) })).code, 0);
    assert.equal((await callPlugin({ node, command: 'ADD', config: conf, containerID: 'gc-drop', netns: netnsPath(drop) })).code, 0);
    writeFileSync(join(dataDir, 'fnt-net', '.flatnet-tmp-99999-deadbeef'), 'gc-crashed\r\neth0');
    // No list: nothing happens.
    assert.equal((await callPlugin({ node, command: 'GC', config: conf })).code, 0);
    assert.ok((await links(node)).includes(hostVethName('gc-drop', 'eth0')));
    const gc = await callPlugin({ node, command: 'GC', config: { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'gc-keep', ifname: 'eth0' }] } });
    assert.equal(gc.code, 0, gc.stdout);
    const owners = readdirSync(join(dataDir, 'fnt-net'))
      .filter((f) => !f.startsWith('last_reserved'))
      .map((f) => readFileSync(join(dataDir, 'fnt-net', f), 'utf8'));
    assert.deepEqual([...new Set(owners)], ['gc-keep\r\neth0']);
    const l = await links(node);
    assert.ok(l.includes(hostVethName('gc-keep', 'eth0')));
    assert.ok(!l.includes(hostVethName('gc-drop', 'eth0')));
    assert.ok(await canPing(keep, '10.99.0.1'), 'the live pod still works');
    await callPlugin({ node, command: 'DEL', config: conf, containerID: 'gc-keep', netns: netnsPath(keep) });
  });

  test("host-local's reservations are respected and its legacy files released by DEL", async () => {
    const dir = join(dataDir, 'fnt-net');
    // What bridge+host-local left on a node that moves to flatnet: one current-format file, one legacy file.
    writeFileSync(join(dir, '10.99.0.50'), 'old-1\r\neth0');
    writeFileSync(join(dir, '10.99.0.51'), 'old-2');
    writeFileSync(join(dir, 'last_reserved_ip.0'), '10.99.0.49');
    const pod = await s.netns('hl');
    const r = await callPlugin({ node, command: 'ADD', config: netconf(dataDir, '1.1.0'), containerID: 'hl-1', netns: netnsPath(pod) });
    assert.equal((r.json!['ips'] as { address: string }[])[0]?.address, '10.99.0.52/24', 'skips both existing reservations');
    assert.equal((await callPlugin({ node, command: 'DEL', config: netconf(dataDir, '1.1.0'), containerID: 'old-2', netns: '' })).code, 0);
    assert.ok(!existsSync(join(dir, '10.99.0.51')), 'legacy id-only file released by container ID');
    assert.ok(existsSync(join(dir, '10.99.0.50')));
    await callPlugin({ node, command: 'DEL', config: netconf(dataDir, '1.1.0'), containerID: 'old-1', netns: '' });
    await callPlugin({ node, command: 'DEL', config: netconf(dataDir, '1.1.0'), containerID: 'hl-1', netns: netnsPath(pod) });
    assert.deepEqual(reservations(dataDir), []);
  });

  test('bad config is refused before anything is created', async () => {
    const pod = await s.netns('bad');
    const r = await callPlugin({ node, command: 'ADD', config: { ...netconf(dataDir, '1.1.0'), hairpin: true }, containerID: 'bad-1', netns: netnsPath(pod) });
    assert.equal(r.json!['code'], 2);
    assert.match(String(r.json!['msg']), /"hairpin"/);
    assert.equal(r.stderr.includes('at '), false, 'no stack trace');
    assert.ok(!(await links(pod)).includes('eth0'));
  });

  test('an existing non-bridge link with the bridge name is an error', async () => {
    await inNs(node, ['ip', 'link', 'add', 'flatx', 'type', 'veth', 'peer', 'name', 'flatx-peer']);
    const pod = await s.netns('nb');
    const r = await callPlugin({ node, command: 'ADD', config: netconf(dataDir, '1.1.0', { bridge: 'flatx' }), containerID: 'nb-1', netns: netnsPath(pod) });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /flatx/);
    assert.deepEqual(reservations(dataDir), []);
    await inNs(node, ['ip', 'link', 'del', 'flatx']);
  });
});

describe('concurrency on one node', () => {
  const s = new Scratch();
  after(() => s.cleanup());

  test('100 parallel ADDs (racing to create the bridge) give 100 distinct working pods; churn leaves no leak', async () => {
    const node = await s.netns('cnode');
    const dataDir = s.tempDir('cipam');
    const conf = netconf(dataDir, '1.1.0', {}, [[{ subnet: '10.99.0.0/24' }]]);
    const pods: string[] = [];
    for (let i = 0; i < 100; i++) pods.push(await s.netns(`c${i}`));
    const results = await Promise.all(pods.map((p, i) => callPlugin({ node, command: 'ADD', config: conf, containerID: `conc-${i}`, netns: netnsPath(p) })));
    const failed = results.filter((r) => r.code !== 0);
    assert.deepEqual(failed.map((r) => r.stdout), []);
    const addrs = results.map((r) => (r.json!['ips'] as { address: string }[])[0]!.address);
    assert.equal(new Set(addrs).size, 100, 'distinct addresses');
    const bridges = JSON.parse(await inNs(node, ['ip', '-j', 'link', 'show', 'type', 'bridge'])) as unknown[];
    assert.equal(bridges.length, 1, 'exactly one bridge');
    // Every pod works: each pings its gateway, and a sample of pairs ping each other.
    const pings = await Promise.all(pods.map((p) => canPing(p, '10.99.0.1')));
    assert.equal(pings.filter((x) => !x).length, 0, 'every pod reaches the gateway');
    for (let i = 0; i < 10; i++) assert.ok(await canPing(pods[i]!, addrs[99 - i]!.split('/')[0]!));

    // Churn: delete the even pods while adding 20 new ones at the same time.
    const extra: string[] = [];
    for (let i = 0; i < 20; i++) extra.push(await s.netns(`x${i}`));
    const churn = await Promise.all([
      ...pods.map((p, i) => (i % 2 === 0 ? callPlugin({ node, command: 'DEL', config: conf, containerID: `conc-${i}`, netns: netnsPath(p) }) : Promise.resolve({ code: 0, stdout: '' }))),
      ...extra.map((p, i) => callPlugin({ node, command: 'ADD', config: conf, containerID: `extra-${i}`, netns: netnsPath(p) })),
    ]);
    assert.deepEqual(churn.filter((r) => r.code !== 0).map((r) => r.stdout), []);
    const live = new Set([...pods.map((_, i) => i).filter((i) => i % 2 === 1).map((i) => `conc-${i}`), ...extra.map((_, i) => `extra-${i}`)]);
    const dir = join(dataDir, 'fnt-net');
    const held = readdirSync(dir).filter((f) => !f.startsWith('last_') && !f.startsWith('.'));
    const holders = held.map((f) => readFileSync(join(dir, f), 'utf8').split('\r\n')[0]!);
    assert.equal(held.length, live.size, 'reservations equal live attachments');
    assert.deepEqual(new Set(holders), live);
    const veths = (await links(node)).filter((n) => n.startsWith('flv'));
    assert.equal(veths.length, live.size, 'no orphan veths');
    const r = await run(['true']);
    assert.equal(r.code, 0);
    await runOk(['ip', 'netns', 'exec', node, 'ip', 'link', 'del', 'flat0']);
  });
});
