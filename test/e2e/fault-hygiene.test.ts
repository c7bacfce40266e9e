// Operations hygiene of the agent (root, on the lab): what a local user or a pod could reach.
//  - the lab agent's unix socket (--listen unix:...) is a socket with mode 0600, and so is the one it
//    serves plugin calls on, in a 0700 /run/flatnet;
//  - the embedded store the agents write: directories 0700, claim files 0600;
//  - a flatnetd started by hand with the default --listen, in a throwaway namespace of this lab (so
//    `lab down` removes it), listens on 127.0.0.1:9642 and nothing else (`ss -ltn` inside it); given no
//    --uplink either, it finds its uplink by the default route (as documented) and writes its own store
//    with the same modes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { CNI_SOCKET_DIR, cniSocketPath } from '../../src/agent/cni-server.ts';
import { isAlive, spawnDetached } from '../../src/lab/processes.ts';
import { nodePaths, storeDir } from '../../src/lab/topology.ts';
import { inNetns, run, runOk } from '../../src/linux/run.ts';
import { diagnostics, labDown, labUp, newLab, waitFor } from '../tools/fault-lab.ts';

function mode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8).padStart(4, '0');
}

describe('agent operations hygiene', () => {
  const lab = newLab('hygiene');
  let handStarted: number | undefined;
  after(async () => {
    if (handStarted !== undefined && isAlive(handStarted)) process.kill(handStarted, 'SIGKILL');
    await labDown(lab);
  });

  it('keeps its socket 0600 and its store files 0600 in 0700 directories', async (t) => {
    await labUp(lab, { nodes: 1, pods: 0 });
    try {
      const sock = nodePaths(lab.root, 'n1').socket;
      assert.ok(statSync(sock).isSocket(), `${sock} is a socket`);
      assert.equal(mode(sock), '0600', `${sock}`);
      const store = storeDir(lab.root);
      const dirs = [store, `${store}/claims`, `${store}/tmp`];
      for (const d of dirs) assert.equal(mode(d), '0700', d);
      const files = readdirSync(`${store}/claims`);
      assert.ok(files.length > 0, 'the agent wrote claim files');
      for (const f of files) assert.equal(mode(`${store}/claims/${f}`), '0600', f);
      // The socket it serves plugin calls on (docs/cni-plugin.md): 0600 in a 0700 directory, as root's.
      const cniSock = cniSocketPath(`net:[${statSync(`/run/netns/${lab.prefix}n1`).ino}]`);
      assert.ok(statSync(cniSock).isSocket(), `${cniSock} is a socket`);
      assert.equal(mode(cniSock), '0600', cniSock);
      assert.equal(mode(CNI_SOCKET_DIR), '0700', CNI_SOCKET_DIR);
      assert.equal(statSync(cniSock).uid, 0);
      t.diagnostic(`sockets 0600 (plugin calls: ${cniSock}); ${dirs.length} store dirs 0700; ${files.length} claim files 0600`);
    } catch (e) {
      t.diagnostic(await diagnostics(lab));
      throw e;
    }
  });

  it('binds its TCP endpoint to loopback only by default', async (t) => {
    // A namespace with the lab's prefix: lab down removes it and ends whatever runs in it.
    const ns = `${lab.prefix}hyg`;
    await runOk(['ip', 'netns', 'add', ns]);
    for (const argv of [
      ['link', 'set', 'lo', 'up'],
      ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1'],
      ['addr', 'add', '192.0.2.10/24', 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
      ['route', 'add', 'default', 'via', '192.0.2.1'],
    ]) await runOk(['ip', '-n', ns, ...argv]);
    const dir = `${lab.root}/hyg`;
    mkdirSync(dir, { recursive: true });
    // Defaults for everything but the paths that would otherwise be this machine's (/etc/cni, /var/lib).
    handStarted = spawnDetached(
      ['ip', 'netns', 'exec', ns, lab.ctx.paths.flatnetd, '--node', 'hyg', '--store-dir', `${dir}/store`, '--cni-conf-dir', `${dir}/net.d`, '--ipam-data-dir', `${dir}/ipam`],
      `${dir}/flatnetd.log`,
    );
    const pid = handStarted;
    const { value: listeners } = await waitFor('the hand-started agent listens', 30_000, async () => {
      assert.ok(isAlive(pid), `flatnetd exited: ${(await run(['tail', '-n', '5', `${dir}/flatnetd.log`])).stdout}`);
      const r = await runOk(inNetns(ns, ['ss', '-H', '-l', '-t', '-n']));
      const l = r.stdout.split('\n').filter((x) => x.trim()).map((x) => x.trim().split(/\s+/)[3] ?? '');
      return l.length > 0 ? l : undefined;
    }, 200);
    t.diagnostic(`TCP listeners in ${ns}: ${listeners.join(', ')}`);
    assert.deepEqual(listeners, ['127.0.0.1:9642'], 'only loopback, port 9642');
    // The store it created on its own (it listens before it opens the store).
    await waitFor('the hand-started agent wrote its claim', 30_000, () => readdirSync(`${dir}/store/claims`).length > 0, 200);
    for (const d of [`${dir}/store`, `${dir}/store/claims`, `${dir}/store/tmp`]) assert.equal(mode(d), '0700', d);
    for (const f of readdirSync(`${dir}/store/claims`)) assert.equal(mode(`${dir}/store/claims/${f}`), '0600', f);
    process.kill(pid, 'SIGTERM');
    await waitFor('hand-started agent stops on SIGTERM', 10_000, () => !isAlive(pid));
  });
});
