// Anti-spoofing, tested by actually spoofing from a pod: a pod that sends with another source address or
// Spoofed addresses are added as /32 and /128: deleting a second address of the pod's own prefix would
// take the prefix route with it (IPv6) and break the test's own later pings.
// MAC is dropped at its node (IPv4 and IPv6), its own traffic is unaffected, and turning the feature off
// makes the same spoofed packets pass (so the drop is ours, not an accident of routing).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from '../../src/linux/run.ts';
import { hostVethName } from '../../src/plugin/names.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';
import { callPlugin, netnsPath } from '../tools/cni.ts';

const ranges = [[{ subnet: '10.99.50.0/24' }], [{ subnet: 'fd00:99:50::/64' }]];

async function elementsFor(node: string, port: string): Promise<string> {
  const r = await run(['ip', 'netns', 'exec', node, 'nft', 'list', 'table', 'bridge', 'flatnet']);
  return r.stdout.split('\n').filter((l) => l.includes(port)).join('\n');
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 40; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The pod's eth0 link-local address, once it has passed DAD (a tentative one answers nothing). */
async function linkLocal(ns: string): Promise<string> {
  let ll: string | undefined;
  await waitFor(async () => {
    const links = JSON.parse(await inNs(ns, ['ip', '-j', '-6', 'addr', 'show', 'dev', 'eth0'])) as { addr_info?: { local: string; scope: string; tentative?: boolean }[] }[];
    ll = links.flatMap((l) => l.addr_info ?? []).find((x) => x.scope === 'link' && !x.tentative)?.local;
    return ll !== undefined;
  }, `a link-local address in ${ns}`);
  return ll!;
}

describe('anti-spoofing', () => {
  const s = new Scratch();
  let node = '';
  let a = '';
  let b = '';
  let dataDir = '';
  const conf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'fnt-as', type: 'flatnet', ipam: { ranges, dataDir }, ...extra });
  let addrB4 = '';
  let addrB6 = '';
  let addrA6 = '';

  before(async () => {
    node = await s.netns('node');
    a = await s.netns('a');
    b = await s.netns('b');
    dataDir = s.tempDir('ipam');
    const ra = await callPlugin({ node, command: 'ADD', config: conf(), containerID: 'as-a', netns: netnsPath(a) });
    const rb = await callPlugin({ node, command: 'ADD', config: conf(), containerID: 'as-b', netns: netnsPath(b) });
    assert.equal(ra.code + rb.code, 0, ra.stdout + rb.stdout);
    [addrB4, addrB6] = (rb.json!['ips'] as { address: string }[]).map((i) => i.address.split('/')[0]!) as [string, string];
    addrA6 = (ra.json!['ips'] as { address: string }[])[1]!.address.split('/')[0]!;
  });
  after(() => s.cleanup());

  test("a pod's own traffic passes, IPv4 and IPv6", async () => {
    assert.ok(await canPing(a, addrB4));
    assert.ok(await canPing(a, addrB6));
  });

  test('a spoofed IPv4 source is dropped at the node', async () => {
    await inNs(a, ['ip', 'addr', 'add', '10.99.50.250/32', 'dev', 'eth0']);
    try {
      assert.equal(await canPing(a, addrB4, { from: '10.99.50.250' }), false, 'spoofed source must not get through');
      assert.ok(await canPing(a, addrB4), 'own address still works');
      // The pod's own IPv4 frames are accepted by the rule before; what is left of IPv4 is dropped and counted.
      const rules = (await inNs(node, ['nft', 'list', 'chain', 'bridge', 'flatnet', 'prerouting'])).split('\n');
      const ipDrop = rules.find((l) => /^\s*ether type ip counter .* drop$/.test(l));
      assert.match(ipDrop ?? '', /packets [1-9]/, 'the IPv4 drop rule counted the drops');
    } finally {
      await inNs(a, ['ip', 'addr', 'del', '10.99.50.250/32', 'dev', 'eth0']);
    }
  });

  test('a spoofed IPv6 source is dropped at the node', async () => {
    await inNs(a, ['ip', 'addr', 'add', 'fd00:99:50::250/128', 'dev', 'eth0', 'nodad']);
    try {
      assert.equal(await canPing(a, addrB6, { from: 'fd00:99:50::250' }), false);
      // IPv6 source selection would now prefer the /128, so name the pod's own address.
      assert.ok(await canPing(a, addrB6, { from: addrA6 }));
    } finally {
      await inNs(a, ['ip', 'addr', 'del', 'fd00:99:50::250/128', 'dev', 'eth0']);
    }
  });

  test('IPv6 link-local traffic (neighbour discovery) passes with the pod\'s own MAC', async () => {
    assert.ok(await canPing(a, `${await linkLocal(b)}%eth0`));
  });

  test('a spoofed MAC is dropped, even with the right address', async () => {
    const link = JSON.parse(await inNs(a, ['ip', '-j', 'link', 'show', 'dev', 'eth0'])) as { address: string }[];
    const own = link[0]!.address;
    await inNs(a, ['ip', 'link', 'set', 'dev', 'eth0', 'address', '02:66:66:66:66:66']);
    await inNs(a, ['ip', 'neigh', 'flush', 'dev', 'eth0']);
    try {
      assert.equal(await canPing(a, addrB4), false);
      // Link-local sources skip the address check, never the MAC check (the last test shows that this
      // same ping passes where there is no anti-spoofing table).
      assert.equal(await canPing(a, `${await linkLocal(b)}%eth0`), false);
    } finally {
      await inNs(a, ['ip', 'link', 'set', 'dev', 'eth0', 'address', own]);
    }
    assert.ok(await canPing(a, addrB4));
  });

  test('CHECK reports missing entries; DEL removes them', async () => {
    const port = hostVethName('as-b', 'eth0');
    const add = await callPlugin({ node, command: 'ADD', config: conf(), containerID: 'as-c', netns: netnsPath(await s.netns('c')) });
    assert.equal(add.code, 0);
    const portC = hostVethName('as-c', 'eth0');
    // CHECK right after ADD must pass (it waits for the detached programming).
    const c1 = await callPlugin({ node, command: 'CHECK', config: { ...conf(), prevResult: add.json }, containerID: 'as-c', netns: add.json ? String((add.json['interfaces'] as { sandbox?: string }[])[2]?.sandbox) : '' });
    assert.equal(c1.code, 0, c1.stdout);
    const line = (await elementsFor(node, portC)).split('\n').find((l) => l.includes('10.99.50.'));
    const ip = /10\.99\.50\.\d+/.exec(line ?? '')?.[0];
    const mac = (add.json!['interfaces'] as { mac: string }[])[2]!.mac;
    await inNs(node, ['nft', `delete element bridge flatnet pods_v4 { "${portC}" . ${ip!} . ${mac} }`]);
    const c2 = await callPlugin({ node, command: 'CHECK', config: { ...conf(), prevResult: add.json }, containerID: 'as-c', netns: String((add.json!['interfaces'] as { sandbox?: string }[])[2]?.sandbox) });
    assert.equal(c2.code, 1);
    assert.match(String(c2.json!['msg']), /anti-spoofing entries .* missing/);
    const del = await callPlugin({ node, command: 'DEL', config: conf(), containerID: 'as-c', netns: '' });
    assert.equal(del.code, 0);
    await waitFor(async () => (await elementsFor(node, portC)) === '', 'entries of the deleted pod to go');
    assert.notEqual(await elementsFor(node, port), '', "other pods' entries stay");
  });

  test('GC removes entries of attachments that are not valid', async () => {
    const portA = hostVethName('as-a', 'eth0');
    const portB = hostVethName('as-b', 'eth0');
    const gc = await callPlugin({ node, command: 'GC', config: { ...conf(), 'cni.dev/valid-attachments': [{ containerID: 'as-a', ifname: 'eth0' }] } });
    assert.equal(gc.code, 0, gc.stdout);
    assert.equal(await elementsFor(node, portB), '');
    assert.notEqual(await elementsFor(node, portA), '');
  });

  test('with antiSpoofing false the same spoofed packets pass (the drop above is ours)', async () => {
    const n2 = await s.netns('node2');
    const [p, q] = [await s.netns('p'), await s.netns('q')];
    const dd = s.tempDir('ipam2');
    const c = { cniVersion: '1.1.0', name: 'fnt-as2', type: 'flatnet', antiSpoofing: false, ipam: { ranges: [[{ subnet: '10.99.51.0/24' }]], dataDir: dd } };
    assert.equal((await callPlugin({ node: n2, command: 'ADD', config: c, containerID: 'np', netns: netnsPath(p) })).code, 0);
    const rq = await callPlugin({ node: n2, command: 'ADD', config: c, containerID: 'nq', netns: netnsPath(q) });
    const target = (rq.json!['ips'] as { address: string }[])[0]!.address.split('/')[0]!;
    await inNs(p, ['ip', 'addr', 'add', '10.99.51.250/32', 'dev', 'eth0']);
    assert.ok(await canPing(p, target, { from: '10.99.51.250' }));
    await inNs(p, ['ip', 'link', 'set', 'dev', 'eth0', 'address', '02:66:66:66:66:66']);
    // The sender needs a link-local address past DAD too (fresh pods, and a MAC change, may leave it tentative).
    await linkLocal(p);
    assert.ok(await canPing(p, `${await linkLocal(q)}%eth0`), 'link-local with a foreign MAC passes without the table');
    const t = await run(['ip', 'netns', 'exec', n2, 'nft', 'list', 'table', 'bridge', 'flatnet']);
    assert.notEqual(t.code, 0, 'no anti-spoofing table when the feature is off');
  });
});
