// Fault injection (root, on the lab): a node's underlay address changes under a running agent (DHCP gave it
// another lease, a VM moved, a container runtime restarted the node: kind#2045). Within two resync periods the
// agent must publish the new address, and its peers must route (host-gw) or tunnel (VXLAN: the FDB entry,
// and the node's own VXLAN device's local address) to it, so pods on different nodes reach each other again.
// Nothing is restarted.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inNetns, run, runOk } from '../../src/linux/run.ts';
import type { Backend } from '../../src/lab/topology.ts';
import { SLACK_MS, agentLog, agentStatus, diagnostics, flatnetRoutes, labDown, labUp, newLab, nodeNetns, waitFor } from '../tools/fault-lab.ts';

const RESYNC_S = 2;
const BOUND_MS = 2 * RESYNC_S * 1000 + SLACK_MS;
const OLD = '172.29.0.12';
const NEW = '172.29.0.22';

function scenario(backend: Backend): void {
  describe(`underlay address change (${backend})`, () => {
    const lab = newLab('ulc');
    after(() => labDown(lab));

    it(`n2 moves from ${OLD} to ${NEW}: it publishes the new address and n1 follows, pods reach each other`, async (t) => {
      const s = await labUp(lab, { nodes: 2, pods: 1, backend, resyncSeconds: RESYNC_S });
      try {
        const n1 = nodeNetns(lab, 'n1');
        const n2 = nodeNetns(lab, 'n2');
        const p1 = s.pods.find((p) => p.node === 'n1');
        const p2 = s.pods.find((p) => p.node === 'n2');
        assert.ok(p1?.ips[0] && p2?.ips[0]);
        const ping = async (from: string, to: string): Promise<boolean> => (await run(inNetns(from, ['ping', '-c', '1', '-W', '1', to]))).code === 0;
        assert.ok(await ping(p1.netns, p2.ips[0]), 'pods reach each other before');
        assert.deepEqual((await agentStatus(lab, 'n2')).underlayIPs, [OLD]);
        const n2Subnet = (await agentStatus(lab, 'n2')).podCIDRs[0] ?? '';

        // The address changes the way a DHCP client changes it: the old one goes, the new one comes, and the
        // default route (flushed with the old address) is put back.
        const t0 = Date.now();
        await runOk(['ip', '-n', n2, 'addr', 'del', `${OLD}/24`, 'dev', 'eth0']);
        await runOk(['ip', '-n', n2, 'addr', 'add', `${NEW}/24`, 'dev', 'eth0']);
        await runOk(['ip', '-n', n2, 'route', 'replace', 'default', 'via', '172.29.0.1']);

        await waitFor('n2 publishes its new address', BOUND_MS, async () => (await agentStatus(lab, 'n2')).underlayIPs.join() === NEW, 200);
        await waitFor('n1 lists n2 at its new address', BOUND_MS, async () => (await agentStatus(lab, 'n1')).peers.some((p) => p.node === 'n2' && p.underlayIPs.join() === NEW), 200);
        if (backend === 'host-gw') {
          await waitFor(`n1 routes ${n2Subnet} via ${NEW}`, BOUND_MS, async () => (await flatnetRoutes(n1)).includes(`${n2Subnet} via ${NEW} dev eth0`), 200);
          assert.equal((await flatnetRoutes(n1)).filter((r) => r.startsWith(`${n2Subnet} `)).length, 1, 'one route to n2, to the new address');
        } else {
          const fdb = async (ns: string): Promise<string> => (await runOk(['bridge', '-n', ns, 'fdb', 'show', 'dev', 'flat.vx'])).stdout;
          await waitFor(`n1's FDB sends n2's VTEP to ${NEW}`, BOUND_MS, async () => (await fdb(n1)).includes(`dst ${NEW} `), 200);
          assert.ok(!(await fdb(n1)).includes(`dst ${OLD} `), `n1's FDB still names ${OLD}`);
          const dev = (await runOk(['ip', '-n', n2, '-d', '-j', 'link', 'show', 'dev', 'flat.vx'])).stdout;
          assert.match(dev, new RegExp(`"local":"${NEW.replaceAll('.', '\\.')}"`), `n2's VXLAN device sends from ${NEW}`);
        }
        await waitFor('pods reach each other again, both ways', BOUND_MS, async () => (await ping(p1.netns, p2.ips[0] ?? '')) && (await ping(p2.netns, p1.ips[0] ?? '')), 200);
        t.diagnostic(`converged ${Date.now() - t0} ms after the address changed`);
        assert.ok(agentLog(lab, 'n2').some((l) => l['msg'] === 'publishing a new underlay address'), 'n2 logged the change');
        assert.equal((await agentStatus(lab, 'n2')).ready, true, 'n2 is ready');
      } catch (e) {
        t.diagnostic(await diagnostics(lab));
        throw e;
      }
    });
  });
}

scenario('host-gw');
scenario('vxlan');
