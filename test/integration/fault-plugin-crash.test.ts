// Plugin crashes (root): 500 ADD/DEL cycles on a fresh node, 4 concurrent workers, with the plugin killed by
// SIGKILL at random instants, then one GC. What must hold: no lock or half-made state blocks the node (a new
// ADD succeeds at once, before GC), an unkilled verb never fails, a DEL after a crash cleans up, and after GC
// the node holds exactly the live attachments: reservations, host veths and pod interfaces, no duplicate
// address anywhere, every live pod reaching its gateway and its neighbours.
//
// Kill instants: uniform over [1 ms, 1.2 x the median duration of an unkilled verb], measured on this machine
// before the run. (A fixed 0-30 ms window would only ever kill `ip netns exec` or Node's start-up, which takes
// longer than that, so no kill would land in the plugin's work.)
//
// Run twice: standalone (no agent on the node: every kill lands in the plugin's own process), and served
// (flatnetd's plugin-call server in the node, test/tools/cni-server-host.ts: a kill then lands in the
// launcher while the agent does the work, and the agent must finish or undo it). Served calls are an order
// of magnitude shorter, so that run has fewer cycles for about the same number of kills.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hostVethName } from '../../src/plugin/names.ts';
import { Scratch, canPing } from '../tools/netns.ts';
import { ServerHost, calls } from '../tools/cni-agent.ts';
import { waitFor } from '../tools/wait.ts';
import { netnsPath } from '../tools/cni.ts';
import { FUZZ_SEED } from '../tools/fuzz.ts';
import { addrsOf, execPlugin, linkNames, linkStates, pluginEnv, storeState, waitForNoProcesses } from '../tools/fuzz-exec.ts';
import { mulberry32 } from '../tools/prng.ts';

const WORKERS = 4;
const SLOTS_PER_WORKER = 2;
const KILL_PROBABILITY = 0.5;
const ABANDON_PROBABILITY = 0.35; // after a killed verb: the runtime forgets the attachment (else it retries DEL)
const NETWORK = 'fnt-crash';
const SUBNET = '10.99.4.0/22';
const GATEWAY = '10.99.4.1';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Live {
  readonly cid: string;
  readonly pod: string;
  readonly address: string; // "10.99.4.7/22"
}

function crashSuite(mode: 'standalone' | 'served by the agent', CYCLES: number): void {
  const served = mode !== 'standalone';
  describe(`plugin crashes (${mode}): ${CYCLES} ADD/DEL cycles with random SIGKILLs, ${WORKERS} workers (seed ${FUZZ_SEED})`, () => {
    const s = new Scratch();
    let node = '';
    let dataDir = '';
    let conf: Record<string, unknown> = {};
    const pool: string[] = [];
    const allPods: string[] = [];
    const hosts = new Map<string, ServerHost>();
    const enter = served ? 'nsenter' : 'ip-netns-exec';
    /** In served mode, the node's agent: started in `ns` (once), as a node's flatnetd would run. */
    const serve = async (ns: string): Promise<void> => {
      if (!served || hosts.has(ns)) return;
      const h = new ServerHost(ns);
      s.trackPid(h.child.pid);
      hosts.set(ns, h);
      await h.ready();
    };
    /** What a killed call left running: its processes, and in served mode the agent's side of it. */
    const settle = async (needle: string, match: 'entry' | 'prefix' = 'entry'): Promise<void> => {
      await waitForNoProcesses(needle, 20_000, match);
      const h = hosts.get(node);
      if (h) await waitFor('the agent to finish the calls it took', 20_000, async () => (await h.metrics())['flatnet_cni_calls_in_flight'] === 0, 20);
    };
    before(async () => {
      node = await s.netns('node');
      dataDir = s.tempDir('ipam');
      conf = { cniVersion: '1.1.0', name: NETWORK, type: 'flatnet', ipam: { ranges: [[{ subnet: SUBNET }]], dataDir } };
      await serve(node);
    });
    after(async () => {
      for (const h of hosts.values()) await h.stop();
      await s.cleanup();
    });

    test('no leaked reservation, veth or interface, no duplicate address, live pods reachable; ADD works before GC', { timeout: 900_000 }, async (t) => {
      const t0 = performance.now();
      // Calibrate the kill window on a separate node, so the crash run itself starts on a node without a bridge.
      const cal = await s.netns('cal');
      await serve(cal);
      const calDir = s.tempDir('cal');
      const calConf = { ...conf, ipam: { ranges: [[{ subnet: '10.99.8.0/24' }]], dataDir: calDir } };
      const addMs: number[] = [];
      const delMs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const p = await s.netns(`cal${i}`);
        const env = { CNI_CONTAINERID: `cal-${i}`, CNI_NETNS: netnsPath(p), CNI_IFNAME: 'eth0' };
        const a = await execPlugin(cal, pluginEnv({ ...env, CNI_COMMAND: 'ADD' }), JSON.stringify(calConf), undefined, enter);
        assert.equal(a.code, 0, `calibration ADD: ${a.stdout}${a.stderr}`);
        const d = await execPlugin(cal, pluginEnv({ ...env, CNI_COMMAND: 'DEL' }), JSON.stringify(calConf), undefined, enter);
        assert.equal(d.code, 0, `calibration DEL: ${d.stdout}${d.stderr}`);
        addMs.push(a.ms);
        delMs.push(d.ms);
      }
      const addWindow = 1.2 * median(addMs);
      const delWindow = 1.2 * median(delMs);

      // Pods are pre-created: enough for the slots plus the ones abandoned on the way (more made if needed).
      const need = WORKERS * SLOTS_PER_WORKER + Math.ceil(CYCLES * 0.2);
      for (let i = 0; i < need; i += 8) {
        const batch = await Promise.all(Array.from({ length: Math.min(8, need - i) }, (_, j) => s.netns(`p${i + j}`)));
        pool.push(...batch);
      }
      allPods.push(...pool);
      let extraPods = 0;
      const takePod = async (): Promise<string> => {
        const p = pool.shift();
        if (p !== undefined) return p;
        const made = await s.netns(`x${extraPods++}`);
        allPods.push(made);
        return made;
      };

      const stats = { addKilled: 0, delKilled: 0, addOk: 0, delOk: 0, retriedDels: 0, abandoned: 0, killsAfterExit: 0 };
      const unexpected: string[] = [];
      const live = new Map<string, Live>(); // by cid: last completed verb was a successful ADD

      // Each worker draws from its own generator and names its own attachments, so a worker's choices (which
      // calls are killed, how far in, which crashed attachments are abandoned) follow from the seed and the
      // measured kill windows, whatever order the workers' calls happen to finish in.
      const verb = async (random: () => number, command: 'ADD' | 'DEL', cid: string, pod: string, killable: boolean) => {
        const kill = killable && random() < KILL_PROBABILITY ? 1 + random() * ((command === 'ADD' ? addWindow : delWindow) - 1) : undefined;
        const r = await execPlugin(node, pluginEnv({ CNI_COMMAND: command, CNI_CONTAINERID: cid, CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0' }), JSON.stringify(conf), kill, enter);
        if (r.killed) {
          if (command === 'ADD') stats.addKilled++;
          else stats.delKilled++;
          // What the killed plugin had started (an `ip -batch`, an nsenter; served: the agent's side) runs on:
          // let it land first, as the runtime's next call for this attachment would in practice come after it.
          await settle(`CNI_CONTAINERID=${cid}`);
        } else if (kill !== undefined) stats.killsAfterExit++;
        if (!r.killed && r.code !== 0) unexpected.push(`${command} ${cid}: exit ${r.code} ${r.stdout.trim()} ${r.stderr.trim().slice(0, 300)}`);
        return r;
      };

      const worker = async (w: number) => {
        const random = mulberry32(FUZZ_SEED + w);
        const slots = await Promise.all(Array.from({ length: SLOTS_PER_WORKER }, takePod));
        const mine = Array.from({ length: CYCLES }, (_, i) => i).filter((i) => i % WORKERS === w);
        for (let k = 0; k < mine.length; k++) {
          const slot = k % SLOTS_PER_WORKER;
          const pod = slots[slot]!;
          const lastForSlot = k >= mine.length - SLOTS_PER_WORKER;
          const cid = `crash-${w}-${k}`;
          let dirty = false;
          const add = await verb(random, 'ADD', cid, pod, true);
          if (!add.killed && add.code === 0) {
            stats.addOk++;
            const ips = (JSON.parse(add.stdout) as { ips: { address: string }[] }).ips;
            live.set(cid, { cid, pod, address: ips[0]!.address });
          } else dirty = true;
          if (!lastForSlot || dirty) {
            live.delete(cid);
            const del = await verb(random, 'DEL', cid, pod, true);
            dirty = del.killed || del.code !== 0;
            if (!dirty) stats.delOk++;
          }
          if (dirty) {
            if (random() < ABANDON_PROBABILITY) {
              // The runtime lost track (it crashed too): the attachment's remains are GC's to clean up.
              stats.abandoned++;
              slots[slot] = await takePod();
            } else {
              stats.retriedDels++;
              const again = await verb(random, 'DEL', cid, pod, false);
              assert.equal(again.code, 0, `DEL after a crash must clean up: ${again.stdout}`);
            }
          }
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
      const crashPhaseMs = performance.now() - t0;
      // Every crash attachment's processes (the entry match would look for a container ID of just "crash-").
      await settle('CNI_CONTAINERID=crash-', 'prefix');
      assert.deepEqual(unexpected, [], 'an unkilled ADD or DEL failed');
      assert.ok(stats.addKilled + stats.delKilled >= CYCLES * 0.25, `too few kills landed: ${JSON.stringify(stats)}`);

      // Before GC: no lock, temp file or half-made veth may block a new ADD.
      for (const i of [0, 1]) {
        const pod = await takePod();
        const cid = `after-crash-${i}`;
        const r = await execPlugin(node, pluginEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: cid, CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0' }), JSON.stringify(conf), undefined, enter);
        assert.equal(r.code, 0, `ADD after the crashes, before GC: ${r.stdout}${r.stderr}`);
        assert.ok(r.ms < 5000, `ADD after the crashes took ${Math.round(r.ms)} ms`);
        live.set(cid, { cid, pod, address: (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address });
      }

      const before = storeState(dataDir, NETWORK);
      const valid = [...live.values()].map((l) => ({ containerID: l.cid, ifname: 'eth0' }));
      const gc = await execPlugin(node, pluginEnv({ CNI_COMMAND: 'GC' }), JSON.stringify({ ...conf, 'cni.dev/valid-attachments': valid }), undefined, enter);
      assert.equal(gc.code, 0, `GC: ${gc.stdout}${gc.stderr}`);
      await waitForNoProcesses(`CNI_COMMAND=GC`);

      // Reservations == live attachments, exactly; no temp files.
      const st = storeState(dataDir, NETWORK);
      assert.deepEqual(st.tempFiles, [], 'temp files left after GC');
      const owners = [...st.reservations.entries()].map(([ip, owner]) => `${owner} ${ip}`).sort();
      const expected = [...live.values()].map((l) => `${l.cid}\r\neth0 ${l.address.split('/')[0]!}`).sort();
      assert.deepEqual(owners, expected, 'reservations must be exactly the live attachments');
      // Owner index: after GC, exactly one entry per reservation, naming it and holding the same owner.
      const indexed = [...st.indexFiles.entries()].map(([name, owner]) => `${owner} ${name.replace(/^\.flatnet-owner-[0-9a-f]{16}-/, '')}`).sort();
      assert.deepEqual(indexed, expected, 'owner index entries must match the reservations after GC');
      // Host veths == live attachments' host veths.
      const flv = (await linkNames(node)).filter((n) => n.startsWith('flv')).sort();
      assert.deepEqual(flv, [...live.values()].map((l) => hostVethName(l.cid, 'eth0')).sort(), 'host veths must be exactly the live ones');
      const bridge = (await linkStates(node)).find((l) => l.ifname === 'flat0');
      assert.ok(bridge && bridge.kind === 'bridge' && bridge.flags.includes('UP'), `bridge flat0 up: ${JSON.stringify(bridge)}`);
      // Pod side: live pods have exactly their address, every other pod has no eth0; no address twice.
      const livePods = new Map([...live.values()].map((l) => [l.pod, l]));
      const seen = new Map<string, string>();
      for (const pod of [...new Set(allPods)]) {
        const addrs = await addrsOf(pod, 'eth0');
        const l = livePods.get(pod);
        if (l) assert.deepEqual(addrs, [l.address], `${pod} (${l.cid}) holds its address`);
        else assert.ok(!(await linkNames(pod)).includes('eth0'), `${pod} must have no eth0 left`);
        for (const a of addrs) {
          assert.ok(!seen.has(a), `address ${a} in both ${seen.get(a)} and ${pod}`);
          seen.set(a, pod);
        }
      }
      // Reachability: gateway and one other live pod.
      const lives = [...live.values()];
      assert.ok(lives.length >= 2, 'at least two live pods');
      for (const [i, l] of lives.entries()) {
        assert.ok(await canPing(l.pod, GATEWAY), `${l.cid} reaches the gateway`);
        const other = lives[(i + 1) % lives.length]!;
        assert.ok(await canPing(l.pod, other.address.split('/')[0]!), `${l.cid} reaches ${other.cid}`);
      }
      const totalMs = performance.now() - t0;
      let agent = '';
      const h = hosts.get(node);
      if (h) {
        // The calls really were the agent's: it served (nearly) all of them and declined none.
        const m = await h.metrics();
        assert.equal(calls(m, undefined, 'declined'), 0, 'the agent declined calls');
        assert.ok(calls(m, undefined, 'ok') >= stats.addOk + stats.delOk, `the agent served ${calls(m, undefined, 'ok')} calls, fewer than the ${stats.addOk + stats.delOk} that succeeded`);
        agent = `agent: ${calls(m, undefined, 'ok')} served, ${calls(m, undefined, 'error')} errors, ${m['flatnet_cni_adds_undone_total'] ?? 0} ADDs undone after their caller died; `;
      }
      t.diagnostic(`${agent}kill window ADD ${Math.round(addWindow)} ms, DEL ${Math.round(delWindow)} ms; ${JSON.stringify(stats)}; ` +
        `reservations before GC ${before.reservations.size} (+${before.tempFiles.length} temp files), after ${st.reservations.size}; live ${lives.length}; ` +
        `crash phase ${Math.round(crashPhaseMs / 1000)} s, total ${Math.round(totalMs / 1000)} s`);
    });
  });
}

crashSuite('standalone', 500);
crashSuite('served by the agent', 300);
