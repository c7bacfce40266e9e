// flatnet driven by a real runtime library: libcni (Debian's 1.1.2, the one containerd 1.6/1.7, CRI-O and
// podman 4 link), chained with the reference portmap plugin, inside a "node" namespace. Proves the result
// libcni parses and caches, CHECK through libcni, hostPort via portmap, DEL's idempotence as containerd
// drives it, and GC/STATUS as libcni 1.2 drives them (see test/tools/libcni-client/main.go).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostVethName } from '../../src/plugin/names.ts';
import { run } from '../../src/linux/run.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';
import { netnsPath } from '../tools/cni.ts';
import { buildLibcniClient, libcni, startTcpServer, tcpRequest, waitTcp } from '../tools/libcni.ts';

const NET = 'fnt-lib';

interface Res {
  cniVersion: string;
  interfaces: { name: string; mac: string; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface?: number; version?: string }[];
  routes: { dst: string; gw?: string }[];
}

async function linkNames(ns: string): Promise<string[]> {
  return (JSON.parse(await inNs(ns, ['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
}

/** What the root namespace looks like, to prove nothing here touched it. */
async function rootSnapshot(): Promise<string> {
  const links = (JSON.parse((await run(['ip', '-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n === 'flat0' || n.startsWith('flv'));
  const fwd = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
  const nat = (await run(['iptables-save', '-t', 'nat'])).stdout.split('\n').filter((l) => l.includes('CNI-')).length;
  return JSON.stringify({ links, fwd, nat });
}

describe('flatnet through libcni (real runtime library) with portmap', () => {
  const s = new Scratch();
  let node = '';
  let outside = '';
  let dataDir = '';
  let cacheDir = '';
  let confDir = '';
  let rootBefore = '';
  const reservations = (net = NET) => {
    const dir = join(dataDir, net);
    return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort() : [];
  };
  const reservedBy = (cid: string) => reservations().filter((ip) => readFileSync(join(dataDir, NET, ip), 'utf8').split(/\r?\n/)[0] === cid);
  const conflist = (file: string, version: string, plugins: unknown[]) => {
    const p = join(confDir, file);
    writeFileSync(p, JSON.stringify({ cniVersion: version, name: NET, plugins }));
    return p;
  };
  const flatnet = () => ({ type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.10.0/24' }]], dataDir } });
  const portmap = { type: 'portmap', capabilities: { portMappings: true } };

  before(async () => {
    rootBefore = await rootSnapshot();
    for (const tool of ['iptables-save', 'go']) assert.equal((await run(['which', tool])).code, 0, `${tool} is required`);
    assert.ok(existsSync('/usr/lib/cni/portmap'), 'reference plugins required: apt-get install -y containernetworking-plugins');
    await buildLibcniClient();
    node = await s.netns('node');
    outside = await s.netns('out');
    dataDir = s.tempDir('ipam');
    cacheDir = s.tempDir('cache');
    confDir = s.tempDir('conf');
    // The node's uplink: an "outside" host at 10.99.200.2 that reaches the node at 10.99.200.1.
    await inNs(node, ['ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside]);
    await inNs(node, ['ip', 'addr', 'add', '10.99.200.1/24', 'dev', 'up0']);
    await inNs(node, ['ip', 'link', 'set', 'up0', 'up']);
    await inNs(outside, ['ip', 'addr', 'add', '10.99.200.2/24', 'dev', 'eth0']);
    await inNs(outside, ['ip', 'link', 'set', 'eth0', 'up']);
  });
  after(async () => {
    await s.cleanup();
  });

  test('1.0.0 list [flatnet, portmap]: ADD, hostPort, CHECK, broken CHECK, DEL twice, DEL after netns gone', async () => {
    const list = conflist('10-v100.conflist', '1.0.0', [flatnet(), portmap]);
    const [a, b] = [await s.netns('pa'), await s.netns('pb')];
    const common = { node, conflist: list, cacheDir };
    const pm = { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] };

    const addA = await libcni('add', { ...common, containerID: 'lib-a', netns: netnsPath(a), capabilityArgs: pm });
    assert.equal(addA.code, 0, addA.stderr);
    const ra = addA.json as unknown as Res;
    assert.equal(ra.cniVersion, '1.0.0');
    assert.deepEqual(ra.interfaces.map((i) => i.name), ['flat0', hostVethName('lib-a', 'eth0'), 'eth0']);
    assert.equal(ra.interfaces[2]?.sandbox, netnsPath(a));
    assert.equal(ra.ips.length, 1);
    assert.match(ra.ips[0]!.address, /^10\.99\.10\.\d+\/24$/);
    assert.equal(ra.ips[0]!.interface, 2);
    assert.equal(ra.ips[0]!.gateway, '10.99.10.1');
    assert.deepEqual(ra.routes, [{ dst: '0.0.0.0/0', gw: '10.99.10.1' }]);
    const cacheFile = join(cacheDir, 'results', `${NET}-lib-a-eth0`);
    assert.ok(existsSync(cacheFile), 'libcni cached the result');
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { kind: string; result: Res; capabilityArgs: unknown };
    assert.equal(cached.kind, 'cniCacheV1');
    assert.deepEqual(cached.result.ips, ra.ips);
    assert.deepEqual(cached.capabilityArgs, pm);

    const addB = await libcni('add', { ...common, containerID: 'lib-b', netns: netnsPath(b) });
    assert.equal(addB.code, 0, addB.stderr);
    const ipA = ra.ips[0]!.address.split('/')[0]!;
    const ipB = (addB.json as unknown as Res).ips[0]!.address.split('/')[0]!;
    assert.ok(await canPing(a, '10.99.10.1'), 'pod a reaches its gateway');
    assert.ok(await canPing(a, ipB), 'pod a reaches pod b');

    // hostPort through portmap's iptables rules in the node namespace.
    startTcpServer(a, 80, 'hello-from-a');
    assert.equal(await waitTcp(b, ipA, 80), 'hello-from-a', 'server reachable directly');
    assert.equal(await tcpRequest(outside, '10.99.200.1', 8080), 'hello-from-a', 'outside host -> node:8080 -> pod a:80');
    assert.equal(await tcpRequest(node, '10.99.200.1', 8080), 'hello-from-a', 'node itself -> own address:8080');
    assert.equal(await tcpRequest(node, '127.0.0.1', 8080), 'hello-from-a', 'node -> 127.0.0.1:8080 (route_localnet)');
    assert.equal(await tcpRequest(b, '10.99.10.1', 8080), 'hello-from-a', 'another pod -> gateway:8080 (hairpin through the bridge)');
    const nat = await inNs(node, ['iptables-save', '-t', 'nat']);
    assert.match(nat, /id: \\"lib-a\\"/, 'portmap rule for pod a in the node namespace');

    // CHECK via libcni: uses the cached result as prevResult for both plugins.
    const chk = { ...common, containerID: 'lib-a', netns: netnsPath(a) };
    const ok = await libcni('check', chk);
    assert.equal(ok.code, 0, ok.stderr);
    await inNs(a, ['ip', 'route', 'del', 'default']);
    const bad = await libcni('check', chk);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /route to 0\.0\.0\.0\/0 via 10\.99\.10\.1 is missing/);
    await inNs(a, ['ip', 'route', 'add', 'default', 'via', '10.99.10.1']);
    assert.equal((await libcni('check', chk)).code, 0, 'repaired pod passes CHECK again');

    // DEL (reverse order: portmap, then flatnet), then containerd's second DEL with an empty netns. Runtimes
    // send the same capability args on DEL as on ADD (portmap finds its rules through them).
    const delA = await libcni('del', { ...chk, capabilityArgs: pm });
    assert.equal(delA.code, 0, delA.stderr);
    assert.ok(!(await linkNames(node)).includes(hostVethName('lib-a', 'eth0')), 'host veth gone');
    assert.ok(!(await linkNames(a)).includes('eth0'), 'pod interface gone');
    assert.deepEqual(reservedBy('lib-a'), [], 'address released');
    assert.ok(!existsSync(cacheFile), 'libcni removed its cache entry');
    assert.doesNotMatch(await inNs(node, ['iptables-save', '-t', 'nat']), /id: \\"lib-a\\"/, 'portmap rules gone');
    const delA2 = await libcni('del', { ...common, containerID: 'lib-a', netns: '', capabilityArgs: pm });
    assert.equal(delA2.code, 0, delA2.stderr);

    // The pod's namespace disappears before the runtime's DEL (a crashed sandbox): DEL still succeeds and releases.
    assert.equal(reservedBy('lib-b').length, 1);
    await run(['ip', 'netns', 'del', b]);
    const delB = await libcni('del', { ...common, containerID: 'lib-b', netns: netnsPath(b) });
    assert.equal(delB.code, 0, delB.stderr);
    assert.deepEqual(reservedBy('lib-b'), [], 'address released without the netns');
    assert.ok(!(await linkNames(node)).includes(hostVethName('lib-b', 'eth0')));
    assert.equal(await rootSnapshot(), rootBefore, 'root namespace untouched');
  });

  test('VERSION and validation as CRI-O does it: every plugin of the list supports its version', async () => {
    const list = conflist('11-val.conflist', '1.0.0', [flatnet(), portmap]);
    const v = await libcni('version', { node, conflist: list });
    assert.equal(v.code, 0, v.stderr);
    assert.deepEqual(v.json!['flatnet'], ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    const val = await libcni('validate', { node, conflist: list });
    assert.equal(val.code, 0, val.stderr);
    assert.deepEqual(val.json!['capabilities'], ['portMappings']);
    // Loading by name from a directory, as runtimes do.
    const byName = await libcni('validate', { node, confDir, net: NET });
    assert.equal(byName.code, 0, byName.stderr);
  });

  for (const version of ['0.4.0', '0.3.1']) {
    test(`${version} list [flatnet, portmap] through libcni: ADD${version === '0.4.0' ? ', CHECK' : ''}, DEL`, async () => {
      const list = conflist(`20-v${version}.conflist`, version, [flatnet(), portmap]);
      const pod = await s.netns(`v${version.replace(/\./g, '')}`);
      const rt = { node, conflist: list, cacheDir, containerID: `lib-${version}`, netns: netnsPath(pod) };
      const caps = { portMappings: [{ hostPort: 8081, containerPort: 81, protocol: 'tcp' }] };
      const add = await libcni('add', { ...rt, capabilityArgs: caps });
      assert.equal(add.code, 0, add.stderr);
      const r = add.json as unknown as Res;
      assert.equal(r.cniVersion, version);
      assert.equal(r.ips[0]?.version, '4', 'ips[].version present before 1.0.0');
      assert.ok(await canPing(pod, '10.99.10.1'));
      const rule = new RegExp(`id: \\\\"lib-${version.replace(/\./g, '\\.')}\\\\"`);
      assert.match(await inNs(node, ['iptables-save', '-t', 'nat']), rule, 'portmap got a valid prevResult and added its rule');
      if (version === '0.4.0') {
        const c = await libcni('check', rt);
        assert.equal(c.code, 0, c.stderr);
      }
      const del = await libcni('del', { ...rt, capabilityArgs: caps });
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(reservedBy(`lib-${version}`), []);
      assert.doesNotMatch(await inNs(node, ['iptables-save', '-t', 'nat']), rule, 'portmap rules gone');
      assert.ok(!(await linkNames(node)).includes(hostVethName(`lib-${version}`, 'eth0')));
    });
  }

  test('GC: libcni DELs stale cached attachments; the GC verb (1.1.0) releases what no cache knows; STATUS', async () => {
    const list100 = conflist('30-gc100.conflist', '1.0.0', [flatnet(), portmap]);
    // Debian's portmap (1.1.1) supports up to 1.0.0, so the 1.1.0 list holds flatnet alone.
    const list110 = conflist('31-gc110.conflist', '1.1.0', [flatnet()]);
    const pods: Record<string, string> = {};
    for (const id of ['gc-1', 'gc-2', 'gc-3']) {
      pods[id] = await s.netns(id);
      const r = await libcni('add', { node, conflist: list100, cacheDir, containerID: id, netns: netnsPath(pods[id]) });
      assert.equal(r.code, 0, r.stderr);
    }
    const alive = (id: string) => ({ veth: hostVethName(id, 'eth0'), reserved: reservedBy(id).length });

    // 1) A 1.0.0 list: libcni DELs every cached attachment not in the valid set (here gc-2), sends no GC verb.
    const gc1 = await libcni('gc', { node, conflist: list100, cacheDir, validAttachments: [{ containerID: 'gc-1', ifname: 'eth0' }, { containerID: 'gc-3', ifname: 'eth0' }] });
    assert.equal(gc1.code, 0, gc1.stderr);
    let links = await linkNames(node);
    assert.ok(!links.includes(alive('gc-2').veth), 'stale gc-2 deleted through its cache');
    assert.equal(alive('gc-2').reserved, 0);
    assert.ok(!existsSync(join(cacheDir, 'results', `${NET}-gc-2-eth0`)));
    for (const id of ['gc-1', 'gc-3']) {
      assert.ok(links.includes(alive(id).veth), `${id} kept`);
      assert.equal(alive(id).reserved, 1);
    }

    // 2) A runtime that lost its cache (empty cache dir) sends GC with only gc-1 valid: our plugin must find
    //    gc-3's reservation and host veth by itself.
    const emptyCache = s.tempDir('cache-empty');
    const gc2 = await libcni('gc', { node, conflist: list110, cacheDir: emptyCache, validAttachments: [{ containerID: 'gc-1', ifname: 'eth0' }] });
    assert.equal(gc2.code, 0, gc2.stderr);
    links = await linkNames(node);
    assert.ok(!links.includes(alive('gc-3').veth), 'GC removed the stale host veth of gc-3');
    assert.equal(alive('gc-3').reserved, 0, 'GC released gc-3');
    assert.ok(links.includes(alive('gc-1').veth), 'gc-1 kept');
    assert.equal(alive('gc-1').reserved, 1);
    assert.ok(await canPing(pods['gc-1']!, '10.99.10.1'), 'the valid pod still works after GC');
    // No list at all (libcni sends no key): nothing is removed.
    const gc3 = await libcni('gc', { node, conflist: list110, cacheDir: emptyCache });
    assert.equal(gc3.code, 0, gc3.stderr);
    assert.equal(alive('gc-1').reserved, 1, 'GC without a list is a no-op');

    // STATUS: ready on 1.1.0; libcni skips it below 1.1.0.
    const st = await libcni('status', { node, conflist: list110 });
    assert.equal(st.code, 0, st.stderr);
    assert.equal((await libcni('status', { node, conflist: list100 })).code, 0);

    // The runtime's own DELs after GC still succeed (gc-3's cache entry outlived its resources).
    for (const id of ['gc-1', 'gc-3']) {
      const d = await libcni('del', { node, conflist: list100, cacheDir, containerID: id, netns: netnsPath(pods[id]!) });
      assert.equal(d.code, 0, d.stderr);
      assert.equal(alive(id).reserved, 0);
    }
  });

  test('a 1.1.0 list through libcni 1.1.x: ADD fails on decoding the result, and the runtime DEL that follows cleans up', async () => {
    // libcni 1.1.x (containerd 1.6/1.7, podman 4) cannot decode a 1.1.0 result: this is why docs/runtimes.md
    // says to write cniVersion 1.0.0 (with cniVersions for newer runtimes).
    const list = conflist('40-v110.conflist', '1.1.0', [flatnet()]);
    const pod = await s.netns('v110');
    const rt = { node, conflist: list, cacheDir, containerID: 'lib-110', netns: netnsPath(pod) };
    const add = await libcni('add', rt);
    assert.equal(add.code, 1);
    assert.match(add.stderr, /unsupported CNI result version "1\.1\.0"/);
    const del = await libcni('del', rt);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(reservedBy('lib-110'), []);
    assert.ok(!(await linkNames(node)).includes(hostVethName('lib-110', 'eth0')));
    assert.ok(!(await linkNames(pod)).includes('eth0'));
  });
});
