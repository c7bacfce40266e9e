// The netlink path against a real kernel: the addon the build ships, each rtnetlink request checked with
// iproute2's own view of the result, nftables set elements checked with nft, and the plugin proven to
// start no process at all on its common path (ADD and DEL succeed with no `ip`, `nft` or `nsenter` on
// PATH), with exactly the wiring its iproute2 fallback produces.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runOk } from '../../src/linux/run.ts';
import { NetlinkError } from '../../src/linux/netlink/codec.ts';
import { NFPROTO_BRIDGE, applyElementChanges } from '../../src/linux/netlink/nftset.ts';
import { addAddress, addRoute, createBridge, createVeth, deleteLink, getLink, setLinkUp, setPortAliasAndHairpin } from '../../src/linux/netlink/rtnl.ts';
import { NETLINK_NETFILTER, NETLINK_ROUTE, NetlinkSocket, loadNetlink, openNetns } from '../../src/linux/netlink/socket.ts';
import { elementChanges } from '../../src/plugin/antispoof-apply.ts';
import { hostVethName } from '../../src/plugin/names.ts';
import { PLUGIN_DIR, callPlugin, netnsPath } from '../tools/cni.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';

// Tests run from source, so the addon is found through the variable rather than beside a bundle.
process.env['FLATNET_NETLINK_ADDON'] = resolve(PLUGIN_DIR, 'flatnet-netlink.node');

async function ipJson(ns: string, args: string[]): Promise<Record<string, unknown>[]> {
  return JSON.parse(await inNs(ns, ['ip', '-j', '-d', ...args])) as Record<string, unknown>[];
}

describe('netlink requests on a real kernel', () => {
  const s = new Scratch();
  let node = '';
  let pod = '';
  let host: NetlinkSocket;
  let inPod: NetlinkSocket;
  let podNs: { fd: number; close(): void };

  before(async () => {
    assert.ok(loadNetlink(), 'the build must produce dist/cni/flatnet-netlink.node and it must load');
    node = await s.netns('node');
    pod = await s.netns('pod');
    const nodeNs = openNetns(netnsPath(node));
    podNs = openNetns(netnsPath(pod));
    // Sockets created inside the scratch namespaces: nothing here touches the test process's own namespace.
    host = new NetlinkSocket(NETLINK_ROUTE, nodeNs.fd);
    inPod = new NetlinkSocket(NETLINK_ROUTE, podNs.fd);
    nodeNs.close();
  });
  after(async () => {
    host?.close();
    inPod?.close();
    podNs?.close();
    await s.cleanup();
  });

  test('a bridge with a fixed MAC, then a veth pair whose peer is born in the pod namespace', async () => {
    createBridge(host, 'fnt0', 1400, '02:aa:00:00:00:01');
    assert.throws(() => createBridge(host, 'fnt0', 1400, '02:aa:00:00:00:01'), (e: unknown) => e instanceof NetlinkError && e.code === 'EEXIST');
    const br = getLink(host, 'fnt0');
    assert.ok(br);
    assert.equal(br.kind, 'bridge');
    setLinkUp(host, br.ifindex, 'fnt0');
    createVeth(host, { hostName: 'fntv1', hostMac: '02:aa:00:00:00:02', masterIndex: br.ifindex, peerName: 'eth0', peerMac: '02:aa:00:00:00:03', peerNetnsFd: podNs.fd, mtu: 1400 });
    const port = getLink(host, 'fntv1');
    assert.ok(port);
    setPortAliasAndHairpin(host, port.ifindex, 'fntv1', 'flatnet:test/eth0@02:aa:00:00:00:03', true);

    const [hostView] = await ipJson(node, ['link', 'show', 'fntv1']);
    assert.equal(hostView?.['master'], 'fnt0');
    assert.equal(hostView?.['mtu'], 1400);
    assert.equal(hostView?.['address'], '02:aa:00:00:00:02');
    assert.equal(hostView?.['ifalias'], 'flatnet:test/eth0@02:aa:00:00:00:03');
    assert.ok((hostView?.['flags'] as string[]).includes('UP'));
    const slave = (hostView?.['linkinfo'] as Record<string, Record<string, unknown>>)['info_slave_data'];
    assert.equal(slave?.['hairpin'], true);
    const [podView] = await ipJson(pod, ['link', 'show', 'eth0']);
    assert.equal(podView?.['address'], '02:aa:00:00:00:03');
    assert.equal(podView?.['mtu'], 1400);
    assert.deepEqual(await ipJson(node, ['link', 'show', 'eth0']).catch(() => []), [], 'the peer is not in the node namespace');
  });

  test('duplicate names are EEXIST and nothing is half-created', () => {
    const br = getLink(host, 'fnt0')!;
    assert.throws(
      () => createVeth(host, { hostName: 'fntv2', hostMac: '02:aa:00:00:00:04', masterIndex: br.ifindex, peerName: 'eth0', peerMac: '02:aa:00:00:00:05', peerNetnsFd: podNs.fd, mtu: 1400 }),
      (e: unknown) => e instanceof NetlinkError && e.code === 'EEXIST',
    );
    assert.equal(getLink(host, 'fntv2'), undefined, 'a refused pair leaves no host end');
    assert.equal(getLink(host, 'no-such-link'), undefined);
  });

  test('addresses and routes in the pod, as iproute2 reports them', async () => {
    const eth = getLink(inPod, 'eth0')!;
    setLinkUp(inPod, eth.ifindex, 'eth0');
    addAddress(host, getLink(host, 'fnt0')!.ifindex, '10.97.0.1/24', { replace: true });
    addAddress(host, getLink(host, 'fnt0')!.ifindex, '10.97.0.1/24', { replace: true }); // replace is idempotent
    addAddress(inPod, eth.ifindex, '10.97.0.5/24');
    addAddress(inPod, eth.ifindex, 'fd97::5/64');
    assert.throws(() => addAddress(inPod, eth.ifindex, '10.97.0.5/24'), (e: unknown) => e instanceof NetlinkError && e.code === 'EEXIST');
    addRoute(inPod, eth.ifindex, '0.0.0.0/0', '10.97.0.1');
    addRoute(inPod, eth.ifindex, '10.96.0.0/16');
    const routes = await ipJson(pod, ['route', 'show']);
    assert.ok(routes.some((r) => r['dst'] === 'default' && r['gateway'] === '10.97.0.1' && r['dev'] === 'eth0'));
    assert.ok(routes.some((r) => r['dst'] === '10.96.0.0/16' && r['scope'] === 'link' && r['gateway'] === undefined));
    const addrs = (await ipJson(pod, ['addr', 'show', 'dev', 'eth0']))[0]?.['addr_info'] as Record<string, unknown>[];
    const v6 = addrs.find((a) => a['local'] === 'fd97::5');
    assert.ok(v6 && v6['nodad'] === true && v6['tentative'] !== true, 'IPv6 is usable at once (no DAD)');
    assert.ok(await canPing(pod, '10.97.0.1'), 'the pod reaches its gateway through the wiring');
  });

  test('deleting the host end removes the pair', () => {
    const port = getLink(host, 'fntv1')!;
    deleteLink(host, port.ifindex, 'fntv1');
    assert.equal(getLink(host, 'fntv1'), undefined);
    assert.equal(getLink(inPod, 'eth0'), undefined);
    assert.throws(() => deleteLink(host, port.ifindex, 'fntv1'), (e: unknown) => e instanceof NetlinkError && e.code === 'ENODEV');
  });

  test('anti-spoofing set elements: added, listed by nft, removed whether or not present', async () => {
    const nodeNs = openNetns(netnsPath(node));
    const nf = new NetlinkSocket(NETLINK_NETFILTER, nodeNs.fd);
    nodeNs.close();
    try {
      const entries = { port: 'fntv9', mac: '02:aa:00:00:00:09', ips: ['10.97.0.9', 'fd97::9'] };
      assert.throws(
        () => applyElementChanges(nf, NFPROTO_BRIDGE, 'flatnet', elementChanges('add', entries), 'add'),
        (e: unknown) => e instanceof NetlinkError && e.code === 'ENOENT',
        'no table yet: ENOENT, which makes the plugin render the table',
      );
      await inNs(node, ['nft', 'add table bridge flatnet; add set bridge flatnet pod_macs { type ifname . ether_addr ; }; add set bridge flatnet pods_v4 { type ifname . ipv4_addr . ether_addr ; }; add set bridge flatnet pods_v6 { type ifname . ipv6_addr . ether_addr ; }']);
      applyElementChanges(nf, NFPROTO_BRIDGE, 'flatnet', elementChanges('add', entries), 'add');
      applyElementChanges(nf, NFPROTO_BRIDGE, 'flatnet', elementChanges('add', entries), 'add again'); // no EEXIST
      const listed = await inNs(node, ['nft', 'list', 'table', 'bridge', 'flatnet']);
      assert.match(listed, /"fntv9" \. 02:aa:00:00:00:09/);
      assert.match(listed, /"fntv9" \. 10\.97\.0\.9 \. 02:aa:00:00:00:09/);
      assert.match(listed, /"fntv9" \. fd97::9 \. 02:aa:00:00:00:09/);
      const both = [...elementChanges('add', entries), ...elementChanges('delete', entries)];
      applyElementChanges(nf, NFPROTO_BRIDGE, 'flatnet', both, 'remove');
      applyElementChanges(nf, NFPROTO_BRIDGE, 'flatnet', both, 'remove again');
      assert.doesNotMatch(await inNs(node, ['nft', 'list', 'table', 'bridge', 'flatnet']), /fntv9/);
    } finally {
      nf.close();
    }
  });
});

describe('the plugin on the netlink path', () => {
  const s = new Scratch();
  let node = '';
  let dataDir = '';
  let bareBin = '';
  const conf = { cniVersion: '1.1.0', name: 'fnt-nl', type: 'flatnet', hairpinMode: true, mtu: 1400, ipam: { ranges: [[{ subnet: '10.97.8.0/24' }], [{ subnet: 'fd97:8::/64' }]], routes: [{ dst: '10.96.0.0/16' }], dataDir: '' } };

  before(async () => {
    node = await s.netns('node');
    dataDir = s.tempDir('ipam');
    conf.ipam.dataDir = dataDir;
    // A PATH with node and nothing else: no ip, nft, nsenter or sysctl to fall back on.
    bareBin = s.tempDir('bin');
    mkdirSync(bareBin, { recursive: true });
    symlinkSync(process.execPath, join(bareBin, 'node'));
  });
  after(() => s.cleanup());

  async function wiring(ns: string, hostVeth: string) {
    const [link] = await ipJson(node, ['link', 'show', hostVeth]);
    const [eth] = await ipJson(ns, ['addr', 'show', 'dev', 'eth0']);
    const routes = await ipJson(ns, ['route', 'show', 'table', 'main']);
    const routes6 = await ipJson(ns, ['-6', 'route', 'show', 'table', 'main']);
    const info = link?.['linkinfo'] as Record<string, Record<string, unknown>> | undefined;
    return {
      master: link?.['master'],
      mtu: [link?.['mtu'], eth?.['mtu']],
      up: [(link?.['flags'] as string[]).includes('UP'), (eth?.['flags'] as string[]).includes('UP')],
      hairpin: info?.['info_slave_data']?.['hairpin'],
      aliasShape: String(link?.['ifalias']).replace(/@.*$/, '@MAC').replace(/^flatnet:[^/]+\//, 'flatnet:ID/'),
      addrs: (eth?.['addr_info'] as Record<string, unknown>[]).filter((a) => a['scope'] === 'global').map((a) => [a['family'], a['prefixlen'], a['nodad'] ?? false]),
      routes: [...routes, ...routes6].filter((r) => r['protocol'] !== 'kernel').map((r) => [r['dst'], r['gateway'] === undefined ? 'onlink' : 'via gw', r['dev']]),
    };
  }

  test('ADD and DEL start no process: they succeed with only node on PATH', async () => {
    // The node's first ADD renders the anti-spoofing table with nft; later ones only add elements.
    const first = await s.netns('p0');
    const r0 = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-0', netns: netnsPath(first) });
    assert.equal(r0.code, 0, r0.stdout);
    const p1 = await s.netns('p1');
    const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-1', netns: netnsPath(p1), env: { PATH: bareBin } });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const ip4 = (add.json!['ips'] as { address: string }[])[0]!.address.split('/')[0]!;
    assert.ok(await canPing(first, ip4), 'the pod wired without any tool is reachable from its neighbour');
    assert.match(await inNs(node, ['nft', 'list', 'table', 'bridge', 'flatnet']), new RegExp(`"${hostVethName('nl-1', 'eth0')}" \\. ${ip4.replaceAll('.', '\\.')}`), 'its anti-spoofing entries are in before ADD returned');
    const del = await callPlugin({ node, command: 'DEL', config: conf, containerID: 'nl-1', netns: netnsPath(p1), env: { PATH: bareBin } });
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.doesNotMatch(await inNs(node, ['nft', 'list', 'table', 'bridge', 'flatnet']), new RegExp(hostVethName('nl-1', 'eth0')));
    assert.deepEqual(await ipJson(node, ['link', 'show', hostVethName('nl-1', 'eth0')]).catch(() => []), []);
    // And the fallback really needs its tools: the same call without the addon fails cleanly.
    const p2 = await s.netns('p2');
    const off = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-2', netns: netnsPath(p2), env: { PATH: bareBin, FLATNET_NETLINK: 'off' } });
    assert.notEqual(off.code, 0);
    assert.equal(typeof off.json?.['code'], 'number', off.stdout);
    assert.deepEqual(await runOk(['ls', join(dataDir, 'fnt-nl')]).then((r) => r.stdout.split('\n').filter((f) => /^10\.|^fd/.test(f)).length), 2, 'only nl-0 holds addresses (one per family)');
  });

  test('a CNI_NETNS that is not a network namespace: error 4 naming it, nothing created or reserved', async () => {
    const notNs = join(s.tempDir('notns'), 'file');
    writeFileSync(notNs, '');
    const before = await ipJson(node, ['link', 'show']);
    const r = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-bad', netns: notNs });
    assert.equal(r.code, 1);
    assert.equal(r.json?.['code'], 4, r.stdout);
    assert.match(String(r.json?.['msg']), /^CNI_NETNS: /);
    assert.deepEqual((await ipJson(node, ['link', 'show'])).map((l) => l['ifname']), before.map((l) => l['ifname']));
    assert.equal(readdirSync(join(dataDir, 'fnt-nl')).filter((f) => readFileSync(join(dataDir, 'fnt-nl', f), 'utf8').startsWith('nl-bad')).length, 0);
  });

  test('the netlink path and the iproute2 fallback wire a pod identically', async () => {
    const a = await s.netns('qa');
    const b = await s.netns('qb');
    const ra = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-a', netns: netnsPath(a) });
    const rb = await callPlugin({ node, command: 'ADD', config: conf, containerID: 'nl-b', netns: netnsPath(b), env: { FLATNET_NETLINK: 'off' } });
    assert.equal(ra.code + rb.code, 0, ra.stdout + rb.stdout);
    const wa = await wiring(a, hostVethName('nl-a', 'eth0'));
    const wb = await wiring(b, hostVethName('nl-b', 'eth0'));
    assert.deepEqual(wa, wb);
    assert.equal(wa.hairpin, true);
    assert.deepEqual(wa.mtu, [1400, 1400]);
    for (const [id, ns] of [['nl-a', a], ['nl-b', b]] as const) {
      // The fallback adds its anti-spoofing entries with a detached nft: give it a moment before CHECK.
      let chk = await callPlugin({ node, command: 'CHECK', config: { ...conf, prevResult: id === 'nl-a' ? ra.json : rb.json }, containerID: id, netns: netnsPath(ns) });
      for (let i = 0; i < 20 && chk.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        chk = await callPlugin({ node, command: 'CHECK', config: { ...conf, prevResult: id === 'nl-a' ? ra.json : rb.json }, containerID: id, netns: netnsPath(ns) });
      }
      assert.equal(chk.code, 0, `${id}: ${chk.stdout}`);
    }
  });

  test('the code cache: saved beside the plugin after the first ADD and DEL, and a corrupt one is harmless', async () => {
    const dir = s.tempDir('plugin');
    for (const f of ['flatnet', 'flatnet-netlink.node']) copyFileSync(join(PLUGIN_DIR, f), join(dir, f));
    const plugin = join(dir, 'flatnet');
    const caches = () => readdirSync(dir).filter((f) => f.endsWith('.cache')).map((f) => f.replace(/^\.flatnet-[0-9a-f]{16}\./, ''));
    const cycle = async (id: string) => {
      const ns = await s.netns(id);
      const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: id, netns: netnsPath(ns), plugin });
      assert.equal(add.code, 0, add.stdout);
      const del = await callPlugin({ node, command: 'DEL', config: conf, containerID: id, netns: netnsPath(ns), plugin });
      assert.equal(del.code, 0, del.stdout);
    };
    assert.deepEqual(caches(), []);
    const ver = await callPlugin({ node, command: 'VERSION', config: {}, plugin });
    assert.equal(ver.code, 0);
    assert.deepEqual(caches(), [], 'VERSION saves nothing');
    await cycle('cc1');
    assert.deepEqual(caches().sort(), ['add.cache', 'full.cache']);
    // Garbage in the cache: V8 rejects it, the plugin compiles normally, answers, and writes a good one.
    const full = readdirSync(dir).find((f) => f.endsWith('.full.cache'))!;
    writeFileSync(join(dir, full), Buffer.alloc(4096, 0x5a));
    await cycle('cc2');
    assert.deepEqual(caches().sort(), ['add.cache', 'full.cache']);
    assert.notDeepEqual(readFileSync(join(dir, full)), Buffer.alloc(4096, 0x5a), 'the damaged cache was replaced');
  });
});
