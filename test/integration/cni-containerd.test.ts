// flatnet driven by containerd 1.6's CRI plugin (Debian's containerd, runc), as a kubelet drives it: our
// own CRI v1 client (gRPC, test/tools/cri-runtime-v1.proto) runs two pod sandboxes, stops and removes them.
// containerd (go-cni, libcni 1.1) sends ADD at RunPodSandbox, DEL at StopPodSandbox and a second DEL with
// CNI_NETNS="" at RemovePodSandbox. A private containerd (own root, state, socket, runc root, cgroup parent,
// CNI dirs) runs in a throwaway "node" network namespace and its own mount namespace (see
// test/tools/containerd.ts), so the bridge, the anti-spoofing table and the forwarding sysctl land in the
// node namespace and nothing touches the host's containerd or root namespace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostVethName } from '../../src/plugin/names.ts';
import { run, runOk } from '../../src/linux/run.ts';
import { shortId } from '../tools/netns.ts';
import { PLUGIN_DIR } from '../tools/cni.ts';
import { Containerd, CriClient, buildPauseImage, removeCgroup, type PodSandboxConfig } from '../tools/containerd.ts';
import { ServerHost, assertAllServed } from '../tools/cni-agent.ts';

const NET = 'fnt-cri';
const SUBNET = /^10\.99\.200\.\d+$/;
const STEP = 60_000; // per CRI call or command

interface Link {
  ifname: string;
}

async function links(argvPrefix: readonly string[]): Promise<string[]> {
  return (JSON.parse((await runOk([...argvPrefix, 'ip', '-j', 'link', 'show'], { timeoutMs: STEP })).stdout) as Link[]).map((l) => l.ifname);
}

/** What the root namespace looks like, to prove nothing here touched it. */
async function rootSnapshot(): Promise<string> {
  const ours = (await links([])).filter((n) => n === 'flat0' || n.startsWith('flv'));
  const fwd = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
  const nft = (await run(['nft', 'list', 'tables'])).stdout.split('\n').filter((l) => l.includes('flatnet'));
  return JSON.stringify({ ours, fwd, nft });
}

describe('containerd 1.6 CRI runs pod sandboxes on flatnet', { timeout: 300_000 }, () => {
  const prefix = `fnt-cri-${shortId()}`;
  const node = `${prefix}-node`;
  const cgroupParent = `/${prefix}`;
  let nodeMade = false;
  let dir = '';
  let dataDir = '';
  let ctd: Containerd | undefined;
  let cri: CriClient | undefined;
  const sandboxes: string[] = [];
  let rootBefore = '';

  const inNode = (argv: readonly string[]) => runOk(['ip', 'netns', 'exec', node, ...argv], { timeoutMs: STEP });
  const reservations = () => {
    const d = join(dataDir, NET);
    return existsSync(d) ? readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort() : [];
  };
  const reservedBy = (id: string) => reservations().filter((ip) => readFileSync(join(dataDir, NET, ip), 'utf8').split(/\r?\n/)[0] === id);
  const podConfig = (name: string): PodSandboxConfig => ({
    metadata: { name, uid: `${prefix}-${name}`, namespace: NET, attempt: 0 },
    hostname: name,
    labels: { app: prefix },
    linux: { cgroupParent, securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } },
  });
  const ping = (pid: number, addr: string) =>
    run(['nsenter', `--net=/proc/${pid}/ns/net`, 'ping', '-c', '3', '-i', '0.2', '-W', '1', '-q', addr], { timeoutMs: STEP });
  const podNetns = (st: { parsedInfo: { runtimeSpec: { linux: { namespaces: { type: string; path?: string }[] } } } }) =>
    st.parsedInfo.runtimeSpec.linux.namespaces.find((n) => n.type === 'network')?.path ?? '';

  before(async () => {
    for (const tool of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'runc', 'busybox', 'nsenter', 'unshare', 'nft']) {
      assert.equal((await run(['which', tool])).code, 0, `${tool} missing: apt-get install -y --no-install-recommends containerd runc busybox-static`);
    }
    assert.ok(existsSync('/usr/lib/cni/loopback'), 'containerd always adds a loopback network: apt-get install -y containernetworking-plugins');
    assert.ok(existsSync(join(PLUGIN_DIR, 'flatnet')), 'build the plugin first: npm run -s build');
    rootBefore = await rootSnapshot();

    await runOk(['ip', 'netns', 'add', node]);
    nodeMade = true;
    await runOk(['ip', '-n', node, 'link', 'set', 'lo', 'up']); // the CRI streaming server listens on 127.0.0.1
    dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
    dataDir = join(dir, 'ipam');
    const binDir = join(dir, 'cni-bin');
    const confDir = join(dir, 'cni-conf');
    for (const d of [binDir, confDir, dataDir, join(dir, 'image')]) mkdirSync(d, { recursive: true });
    // bin_dir is ONE directory: the plugin, its netlink addon (loaded from beside it), and loopback.
    for (const f of ['flatnet', 'flatnet-netlink.node']) copyFileSync(join(PLUGIN_DIR, f), join(binDir, f));
    copyFileSync('/usr/lib/cni/loopback', join(binDir, 'loopback'));
    writeFileSync(join(confDir, '10-flatnet.conflist'), JSON.stringify({
      cniVersion: '1.0.0', // containerd 1.6's libcni (1.1.x) cannot decode 1.1.0 results
      name: NET,
      plugins: [{ type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.200.0/24' }]], dataDir } }],
    }));

    ctd = await Containerd.start({ dir, nodeNs: node, binDir, confDir });
    const archive = await buildPauseImage(join(dir, 'image'));
    const imp = await ctd.ctr(['images', 'import', '--snapshotter', 'native', archive]);
    assert.equal(imp.code, 0, `ctr images import: ${imp.stderr}`);
    cri = new CriClient(ctd.socket);
  });

  after(async () => {
    try {
      // Sandboxes first (containerd tears their networks down and unmounts their netns), each bounded.
      if (cri !== undefined && ctd !== undefined) {
        for (const id of sandboxes.splice(0).reverse()) {
          await cri.stopPodSandbox(id, 20_000).catch(() => undefined);
          await cri.removePodSandbox(id, 20_000).catch(() => undefined);
        }
      }
      cri?.close();
      // containerd (by pid), then any shim it left, then whatever still runs in our cgroup parent (pause
      // processes of a shim that died): their mount namespace, with every mount containerd made, goes with them.
      await ctd?.stop();
      await removeCgroup(cgroupParent);
      // Nothing should be mounted on the host under our directory; if something is, detach it.
      if (dir !== '') {
        for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').reverse()) {
          const target = line.split(' ')[4];
          if (target !== undefined && target.startsWith(`${dir}/`)) await run(['umount', '-l', target]);
        }
      }
    } finally {
      if (nodeMade) {
        for (const p of (await run(['ip', 'netns', 'pids', node])).stdout.split('\n').filter(Boolean)) {
          try {
            process.kill(Number(p), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await run(['ip', 'netns', 'del', node]);
      }
      if (dir !== '') rmSync(dir, { recursive: true, force: true });
    }
  });

  test('two sandboxes get distinct flatnet addresses and reach each other; stop releases, remove (second DEL) succeeds', async (t) => {
    assert.ok(cri !== undefined && ctd !== undefined);
    const v = await cri.version();
    assert.equal(v.runtimeName, 'containerd');
    assert.equal(v.runtimeApiVersion, 'v1', 'containerd serves CRI v1');
    t.diagnostic(`containerd ${v.runtimeVersion}`);

    // RunPodSandbox: containerd makes the netns, calls ADD (loopback and flatnet), starts the pause process.
    const t0 = Date.now();
    const a = await cri.runPodSandbox(podConfig('a'), STEP);
    sandboxes.push(a);
    const b = await cri.runPodSandbox(podConfig('b'), STEP);
    sandboxes.push(b);
    t.diagnostic(`two RunPodSandbox: ${Date.now() - t0} ms`);

    const [sa, sb] = [await cri.podSandboxStatus(a, STEP), await cri.podSandboxStatus(b, STEP)];
    for (const s of [sa, sb]) {
      assert.equal(s.status.state, 'SANDBOX_READY');
      assert.match(s.status.network?.ip ?? '', SUBNET, 'the sandbox reports an address from the flatnet subnet');
      assert.deepEqual(s.status.network?.additionalIps, [], 'IPv4 only');
      assert.equal(s.status.metadata.namespace, NET);
      assert.equal(s.parsedInfo.netNamespaceClosed, false);
      assert.ok(s.parsedInfo.pid > 0, 'pause process pid in the verbose info');
    }
    const ipA = sa.status.network!.ip;
    const ipB = sb.status.network!.ip;
    assert.notEqual(ipA, ipB, 'distinct addresses');
    const [nsA, nsB] = [podNetns(sa), podNetns(sb)];
    for (const ns of [nsA, nsB]) {
      assert.ok(ns.startsWith(join(dir, 'state') + '/'), `containerd's netns for the pod is under its state dir: ${ns}`);
      assert.ok(existsSync(ns), 'and exists');
    }

    // Our reservations, one per sandbox, keyed by the sandbox id (= CNI_CONTAINERID).
    assert.deepEqual(reservedBy(a), [ipA]);
    assert.deepEqual(reservedBy(b), [ipB]);
    assert.deepEqual(reservations(), [ipA, ipB].sort());

    // Inside the pods: eth0 with the reported address, default route via the bridge.
    for (const [s, ip] of [[sa, ipA], [sb, ipB]] as const) {
      const pod = ['nsenter', `--net=/proc/${s.parsedInfo.pid}/ns/net`];
      const addrs = (await runOk([...pod, 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], { timeoutMs: STEP })).stdout;
      assert.match(addrs, new RegExp(`inet ${ip.replace(/\./g, '\\.')}/24 `), `pod eth0 carries ${ip}`);
      assert.match((await runOk([...pod, 'ip', 'route', 'show', 'default'], { timeoutMs: STEP })).stdout, /^default via 10\.99\.200\.1 dev eth0/);
    }

    // The datapath is in the node namespace (the plugin is containerd's child), not in the root namespace.
    const nodeLinks = await links(['ip', 'netns', 'exec', node]);
    assert.ok(nodeLinks.includes('flat0'), 'bridge in the node namespace');
    for (const id of [a, b]) assert.ok(nodeLinks.includes(hostVethName(id, 'eth0')), `host veth of ${id.slice(0, 12)} in the node namespace`);
    assert.equal(nodeLinks.filter((n) => n.startsWith('flv')).length, 2);
    assert.equal((await inNode(['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1', 'forwarding on in the node namespace');
    assert.equal((await run(['ip', 'netns', 'exec', node, 'nft', 'list', 'table', 'bridge', 'flatnet'])).code, 0, 'anti-spoofing table in the node namespace');
    assert.equal(await rootSnapshot(), rootBefore, 'root namespace untouched (links, ip_forward, nftables)');

    // The two pods reach each other, and the node reaches them.
    let p = await ping(sa.parsedInfo.pid, ipB);
    assert.equal(p.code, 0, `a pings b: ${p.stdout}${p.stderr}`);
    p = await ping(sb.parsedInfo.pid, ipA);
    assert.equal(p.code, 0, `b pings a: ${p.stdout}${p.stderr}`);
    assert.equal((await run(['ip', 'netns', 'exec', node, 'ping', '-c', '3', '-i', '0.2', '-W', '1', '-q', ipA], { timeoutMs: STEP })).code, 0, 'node pings a');

    // StopPodSandbox: DEL with the netns; address released, host veth gone, netns removed; b unaffected.
    await cri.stopPodSandbox(a, STEP);
    const stopped = await cri.podSandboxStatus(a, STEP);
    assert.equal(stopped.status.state, 'SANDBOX_NOTREADY');
    assert.deepEqual(reservedBy(a), [], 'StopPodSandbox released the address');
    let nl = await links(['ip', 'netns', 'exec', node]);
    assert.ok(!nl.includes(hostVethName(a, 'eth0')), 'host veth of a gone');
    assert.ok(nl.includes(hostVethName(b, 'eth0')), 'host veth of b kept');
    assert.ok(!existsSync(nsA), "containerd removed a's netns at stop");
    assert.deepEqual(reservedBy(b), [ipB]);
    p = await run(['ip', 'netns', 'exec', node, 'ping', '-c', '3', '-i', '0.2', '-W', '1', '-q', ipB], { timeoutMs: STEP });
    assert.equal(p.code, 0, `b still reachable after a stopped: ${p.stdout}`);

    // RemovePodSandbox: containerd's second DEL (CNI_NETNS="", no prevResult) must succeed.
    await cri.removePodSandbox(a, STEP);
    sandboxes.splice(sandboxes.indexOf(a), 1);
    await assert.rejects(cri.podSandboxStatus(a, STEP), (e: { code?: number }) => e.code === 5, 'a is gone (NOT_FOUND)');
    assert.deepEqual(reservedBy(b), [ipB], "a's removal did not touch b");

    // b: stop and remove as well; then nothing of ours is left in the node namespace.
    await cri.stopPodSandbox(b, STEP);
    assert.deepEqual(reservedBy(b), []);
    assert.ok(!existsSync(nsB), "containerd removed b's netns at stop");
    await cri.removePodSandbox(b, STEP);
    sandboxes.splice(sandboxes.indexOf(b), 1);
    assert.deepEqual(reservations(), [], 'no reservation left');
    nl = await links(['ip', 'netns', 'exec', node]);
    assert.deepEqual(nl.filter((n) => n.startsWith('flv')), [], 'no host veth left in the node namespace');
    assert.equal(await rootSnapshot(), rootBefore, 'root namespace still untouched');

    // containerd saw no CNI failure (a failed ADD or DEL shows as "failed to setup network", "Failed to
    // destroy network" or a teardown error; our own NOT_FOUND status query above is not one).
    const errors = ctd.log().split('\n').filter((l) => /level=error/.test(l) && /network|cni/i.test(l));
    assert.deepEqual(errors, [], 'no CNI error in the containerd log');
  });

  test("with the node's agent beside containerd, its plugin calls are served", async () => {
    assert.ok(cri !== undefined && ctd !== undefined);
    // The agent in containerd's network and mount namespaces (containerd has a mount namespace of its own
    // here, with its own /run), where a node's flatnetd would have to be to serve its calls.
    const host = new ServerHost(node, { mountNsOf: ctd.pid });
    try {
      await host.ready();
      const c = await cri.runPodSandbox(podConfig('c'), STEP);
      sandboxes.push(c);
      const sc = await cri.podSandboxStatus(c, STEP);
      assert.equal(sc.status.state, 'SANDBOX_READY');
      const ip = sc.status.network?.ip ?? '';
      assert.match(ip, SUBNET);
      assert.deepEqual(reservedBy(c), [ip]);
      assert.equal((await run(['ip', 'netns', 'exec', node, 'ping', '-c', '3', '-i', '0.2', '-W', '1', '-q', ip], { timeoutMs: STEP })).code, 0, 'node pings the served pod');
      await cri.stopPodSandbox(c, STEP);
      await cri.removePodSandbox(c, STEP);
      sandboxes.splice(sandboxes.indexOf(c), 1);
      assert.deepEqual(reservations(), [], 'no reservation left');
      assert.deepEqual((await links(['ip', 'netns', 'exec', node])).filter((n) => n.startsWith('flv')), [], 'no host veth left');
      const m = await host.metrics();
      // The ADD, and the DELs of stop and remove.
      assertAllServed(m, 1, 2);
    } finally {
      await host.stop();
    }
  });
});
