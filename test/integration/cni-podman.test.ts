// flatnet driven by podman 4.3's CNI backend (libcni inside podman: VERSION before every ADD/DEL, --ip as
// CNI_ARGS IP=), with the plugin running itself, then with the node's agent serving its calls. podman runs entirely on private state (containers.conf, storage.conf, root, runroot, CNI
// config dir, all in a temp dir) and inside a "node" namespace entered with nsenter --net (not `ip netns
// exec`, which remounts /sys and hides the cgroup mounts runc needs), so our bridge lands there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, runOk } from '../../src/linux/run.ts';
import { Scratch, inNs } from '../tools/netns.ts';
import { PLUGIN_DIR, netnsPath } from '../tools/cni.ts';
import { busyboxRootfsTar } from '../tools/rootfs.ts';
import { ServerHost, assertAllServed } from '../tools/cni-agent.ts';
import { removeStaleCniSocket } from '../../src/agent/cni-server.ts';

const NET = 'fntnet';
const IMAGE = 'localhost/fnt-busybox:1';

async function rootLinks(): Promise<string[]> {
  return (JSON.parse((await runOk(['ip', '-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n === 'flat0' || n.startsWith('flv'));
}

describe('podman (CNI backend) runs containers on flatnet', () => {
  const s = new Scratch();
  let node = '';
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  let rootBefore: string[] = [];
  const containers: string[] = [];

  const podman = (args: readonly string[]) =>
    run(['nsenter', `--net=${netnsPath(node)}`, 'podman', '--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--cni-config-dir', join(dir, 'cni'), '--network-backend', 'cni', ...args], { env, timeoutMs: 120_000 });
  const podmanOk = async (args: readonly string[]) => {
    const r = await podman(args);
    assert.equal(r.code, 0, `podman ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const reservations = () => {
    const d = join(dir, 'ipam', NET);
    return existsSync(d) ? readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort() : [];
  };

  before(async () => {
    for (const tool of ['podman', 'runc', 'conmon', 'busybox', 'nsenter']) {
      assert.equal((await run(['which', tool])).code, 0, `${tool} missing: apt-get install -y --no-install-recommends podman runc busybox-static`);
    }
    rootBefore = await rootLinks();
    node = await s.netns('node');
    dir = s.tempDir('podman');
    for (const d of ['cni', 'root', 'runroot', 'tmp', 'ipam']) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'containers.conf'), [
      '[containers]',
      // root here cannot raise its limits; podman's defaults would fail.
      'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
      '[engine]',
      'runtime = "runc"', // crun fails on these hybrid cgroups
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = "${join(dir, 'events.log')}"`,
      `tmp_dir = "${join(dir, 'tmp')}"`,
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = ["${PLUGIN_DIR}", "/usr/lib/cni"]`,
      `network_config_dir = "${join(dir, 'cni')}"`,
      '',
    ].join('\n'));
    writeFileSync(join(dir, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${join(dir, 'root')}"\nrunroot = "${join(dir, 'runroot')}"\n`);
    writeFileSync(join(dir, 'cni', `${NET}.conflist`), JSON.stringify({
      cniVersion: '1.0.0', // podman 4.3's libcni (1.1.x) cannot decode 1.1.0 results
      name: NET,
      plugins: [{ type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.40.0/24' }]], dataDir: join(dir, 'ipam') } }],
    }));
    env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'), CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf') };
    writeFileSync(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');

    await busyboxRootfsTar(join(dir, 'rootfs'), join(dir, 'rootfs.tar'), (await runOk(['busybox', '--list'])).stdout.split('\n').filter(Boolean));
    await podmanOk(['import', '--change', 'CMD ["/bin/sh"]', join(dir, 'rootfs.tar'), IMAGE]);
  });

  after(async () => {
    try {
      if (dir !== '' && node !== '') {
        if (containers.length) await podman(['rm', '-f', '-t', '0', ...containers]);
        await podman(['rmi', '-f', '-a']);
      }
    } finally {
      await s.cleanup();
    }
  });

  /** Two containers, one with --ip: our addresses, reachable over ICMP and TCP; rm releases everything. */
  const pairOnFlatnet = async (a: string, b: string, ipB: string): Promise<void> => {
    containers.push(a);
    await podmanOk(['run', '-d', '--name', a, '--network', NET, IMAGE, 'sleep', '600']);
    containers.push(b);
    await podmanOk(['run', '-d', '--name', b, '--network', NET, '--ip', ipB, IMAGE, 'sleep', '600']);
    const ipOf = (c: string) => podmanOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${NET}").IPAddress}}`, c]);
    const ipA = await ipOf(a);
    assert.match(ipA, /^10\.99\.40\.\d+$/, 'address from our range');
    assert.equal(await ipOf(b), ipB, '--ip (CNI_ARGS IP=) honoured');
    assert.deepEqual(reservations(), [ipA, ipB].sort(), 'reservations in our dataDir');

    // The datapath is in the node namespace, not the root one.
    const nodeLinks = await inNs(node, ['ip', '-br', 'link']);
    assert.match(nodeLinks, /^flat0\s/m);
    assert.equal((nodeLinks.match(/^flv[0-9a-f]{12}@/gm) ?? []).length, 2, 'two host veths on the node');
    assert.deepEqual(await rootLinks(), rootBefore, 'root namespace got no bridge or veth');
    assert.equal((await inNs(node, ['cat', '/proc/sys/net/ipv4/ip_forward'])).trim(), '1');

    const ping = await podman(['exec', a, 'ping', '-c', '1', '-W', '2', ipB]);
    assert.equal(ping.code, 0, `a pings b: ${ping.stdout}${ping.stderr}`);
    await podmanOk(['exec', b, 'sh', '-c', 'echo hello-from-b > /tmp/index.html && httpd -p 8080 -h /tmp']);
    assert.equal(await podmanOk(['exec', a, 'wget', '-q', '-O', '-', `http://${ipB}:8080/index.html`]), 'hello-from-b', 'a fetches from b over TCP');
    const sandbox = await podmanOk(['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', b]);
    assert.match(readFileSync('/proc/self/mounts', 'utf8'), new RegExp(sandbox.replace(/[/.-]/g, '\\$&')), 'podman made a netns for the container');

    await podmanOk(['rm', '-f', '-t', '0', a, b]);
    containers.length = 0;
    assert.deepEqual(reservations(), [], 'DEL released both addresses');
    assert.doesNotMatch(await inNs(node, ['ip', '-br', 'link']), /^flv/m, 'host veths gone');
    assert.ok(!existsSync(sandbox), "the container's netns is gone");
  };

  test('two containers get our addresses, --ip is honoured, they reach each other; rm cleans up', async () => {
    const nets = await podmanOk(['network', 'ls', '--format', '{{.Name}}']);
    assert.ok(nets.split('\n').includes(NET), `podman sees the flatnet network: ${nets}`);
    await pairOnFlatnet('fnt-a', 'fnt-b', '10.99.40.77');
  });

  test('the same with the node\'s agent serving podman\'s plugin calls', async () => {
    // podman runs in the node's network namespace and this process's mount namespace, as flatnetd does
    // here: its plugin calls go to the agent (docs/cni-plugin.md).
    const host = new ServerHost(node);
    s.trackPid(host.child.pid);
    try {
      await host.ready();
      await pairOnFlatnet('fnt-c', 'fnt-d', '10.99.40.78');
      const m = await host.metrics();
      assertAllServed(m, 2, 2);
    } finally {
      await host.stop();
      removeStaleCniSocket(netnsPath(node));
    }
  });
});
