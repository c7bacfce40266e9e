// Concurrency on a fresh node (root): 30 first ADDs race to create the bridge; and the state a plugin killed
// in the middle of creating the bridge leaves behind (bridge present but down) must not break later ADDs.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hostVethName } from '../../src/plugin/names.ts';
import { runOk } from '../../src/linux/run.ts';
import { Scratch, canPing } from '../tools/netns.ts';
import { netnsPath } from '../tools/cni.ts';
import { addrsOf, execPlugin, linkNames, linkStates, pluginEnv, storeState, waitForNoProcesses } from '../tools/fuzz-exec.ts';

describe('plugin concurrency on a fresh node', () => {
  const s = new Scratch();
  after(() => s.cleanup());

  test('30 first ADDs racing to create the bridge: all succeed, one bridge, 30 distinct addresses', { timeout: 300_000 }, async (t) => {
    const node = await s.netns('race');
    const dataDir = s.tempDir('race');
    const conf = JSON.stringify({ cniVersion: '1.1.0', name: 'fnt-race', type: 'flatnet', bridge: 'flrace0', ipam: { ranges: [[{ subnet: '10.99.12.0/24' }]], dataDir } });
    const pods = await Promise.all(Array.from({ length: 30 }, (_, i) => s.netns(`r${i}`)));
    assert.ok(!(await linkNames(node)).includes('flrace0'), 'the node starts without a bridge');
    const t0 = performance.now();
    const results = await Promise.all(
      pods.map((p, i) => execPlugin(node, pluginEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: `race-${i}`, CNI_NETNS: netnsPath(p), CNI_IFNAME: 'eth0' }), conf)),
    );
    const ms = performance.now() - t0;
    results.forEach((r, i) => assert.equal(r.code, 0, `ADD race-${i}: ${r.stdout}${r.stderr}`));
    const addrs = results.map((r) => (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address);
    assert.equal(new Set(addrs).size, 30, `distinct addresses: ${addrs.join(' ')}`);
    const links = await linkStates(node);
    const bridges = links.filter((l) => l.kind === 'bridge');
    assert.deepEqual(bridges.map((b) => b.ifname), ['flrace0'], 'exactly one bridge');
    assert.ok(bridges[0]!.flags.includes('UP'), 'the bridge is up');
    const ports = links.filter((l) => l.master === 'flrace0').map((l) => l.ifname).sort();
    assert.deepEqual(ports, pods.map((_, i) => hostVethName(`race-${i}`, 'eth0')).sort(), 'every host veth on the bridge');
    // The kernel agrees: each pod holds the address its result names, and the store holds exactly these.
    for (const [i, p] of pods.entries()) assert.deepEqual(await addrsOf(p, 'eth0'), [addrs[i]]);
    const st = storeState(dataDir, 'fnt-race');
    assert.deepEqual([...st.reservations.keys()].sort(), addrs.map((a) => a.split('/')[0]!).sort());
    assert.deepEqual(st.tempFiles, []);
    for (const i of [0, 13, 29]) {
      assert.ok(await canPing(pods[i]!, '10.99.12.1'), `pod ${i} reaches the gateway`);
      assert.ok(await canPing(pods[i]!, addrs[(i + 7) % 30]!.split('/')[0]!), `pod ${i} reaches pod ${(i + 7) % 30}`);
    }
    t.diagnostic(`30 concurrent ADDs in ${Math.round(ms)} ms`);
  });

  test('a bridge left down by a plugin killed between creating it and setting it up is brought up by the next ADD', { timeout: 120_000 }, async () => {
    const node = await s.netns('down');
    const dataDir = s.tempDir('down');
    const conf = JSON.stringify({ cniVersion: '1.1.0', name: 'fnt-down', type: 'flatnet', bridge: 'fldown0', ipam: { ranges: [[{ subnet: '10.99.13.0/24' }]], dataDir } });
    // Exactly what ensureBridge's `ip link add ... type bridge` leaves when the plugin dies before `link set up`.
    await runOk(['ip', '-n', node, 'link', 'add', 'fldown0', 'address', '02:00:00:00:13:01', 'type', 'bridge']);
    const pod = await s.netns('d0');
    const r = await execPlugin(node, pluginEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'down-0', CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0' }), conf);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await waitForNoProcesses('CNI_CONTAINERID=down-0');
    const bridge = (await linkStates(node)).find((l) => l.ifname === 'fldown0');
    assert.ok(bridge?.flags.includes('UP'), `bridge must be up after an ADD: ${JSON.stringify(bridge)}`);
    assert.ok(await canPing(pod, '10.99.13.1'), 'the pod reaches its gateway');
  });
});
