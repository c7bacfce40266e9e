// Fault injection (root, on the lab): the agent dies under traffic. Two nodes with one pod each keep one
// TCP connection (a counter every 10 ms) and a UDP flow (a sequence number every 10 ms) busy across
// nodes; the agent of the node hosting the server pod is killed with SIGKILL, stays dead for more than a
// resync period, and is started again exactly as the lab starts it. The data plane must not notice:
// every UDP sequence number answered, the TCP connection intact with every line echoed in order and no
// TCP retransmission in either pod, no add/delete of a protocol-241 route seen by `ip monitor` on
// either node, the same subnet lease, and a restarted agent that changes nothing (datapath changes and
// CNI config writes both 0). Once for host-gw and once for VXLAN.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { restartAgent } from '../../src/lab/lab.ts';
import { startTraffic } from '../tools/traffic.ts';
import type { TrafficProcess } from '../tools/traffic.ts';
import {
  RouteMonitor,
  agentStatus,
  datapathChanges,
  diagnostics,
  flatnetRoutes,
  killAgent,
  labDown,
  labUp,
  metricValue,
  metrics,
  newLab,
  nodeNetns,
  sleep,
  segmentsLost,
  tcpCounters,
  counterDelta,
} from '../tools/fault-lab.ts';
import type { Backend } from '../../src/lab/topology.ts';

const RESYNC_S = 2;

function scenario(backend: Backend): void {
  describe(`agent killed under cross-node traffic (${backend})`, () => {
    const lab = newLab('restart');
    const running: TrafficProcess[] = [];
    const monitors: RouteMonitor[] = [];
    after(async () => {
      for (const p of running) p.kill();
      for (const m of monitors) m.stop();
      await labDown(lab);
    });

    it('loses no packet, keeps the TCP connection, the lease and every route', async (t) => {
      const s = await labUp(lab, { nodes: 2, pods: 1, backend, resyncSeconds: RESYNC_S });
      const client = s.pods.find((p) => p.node === 'n1');
      const server = s.pods.find((p) => p.node === 'n2');
      assert.ok(client && server && server.ips[0], 'lab has a pod on n1 and one on n2');
      try {
        const before = await agentStatus(lab, 'n2');
        const routesBefore = { n1: await flatnetRoutes(nodeNetns(lab, 'n1')), n2: await flatnetRoutes(nodeNetns(lab, 'n2')) };
        assert.equal(routesBefore.n1.length, 1, `n1 routes n2's subnet: ${routesBefore.n1.join('; ')}`);
        assert.equal(routesBefore.n2.length, 1, `n2 routes n1's subnet: ${routesBefore.n2.join('; ')}`);
        const n1ChangesBefore = datapathChanges(await metrics(lab, 'n1'));

        for (const n of ['n1', 'n2']) {
          const m = new RouteMonitor(nodeNetns(lab, n));
          monitors.push(m);
          await m.ready();
        }
        const before0 = { client: await tcpCounters(client.netns), server: await tcpCounters(server.netns) };
        const traffic = await startTraffic(server.netns, client.netns, server.ips[0]);
        running.push(traffic.client, traffic.server);
        await sleep(1_000);

        const tKill = Date.now();
        await killAgent(lab, 'n2');
        // Dead for more than a resync period of its peer: n1 reconciles meanwhile and must keep n2's route.
        await sleep(RESYNC_S * 1000 + 1_500);
        await restartAgent(lab.ctx, lab.root, 'n2');
        const readyAfter = Date.now() - tKill;
        // Two resync periods of the new agent: any change it wanted to make is made by then.
        await sleep(2 * RESYNC_S * 1000 + 500);
        const report = await traffic.client.stop();
        const tcp = { client: counterDelta(before0.client, await tcpCounters(client.netns)), server: counterDelta(before0.server, await tcpCounters(server.netns)) };
        t.diagnostic(`TCP counters (deltas): ${JSON.stringify(tcp)}`);
        t.diagnostic(`agent down->ready ${readyAfter} ms; traffic ${JSON.stringify({ ...report, udp: { ...report.udp, missing: report.udp.missing.slice(0, 5) } })}`);

        assert.equal(report.tcp.error, undefined, `TCP connection broke: ${report.tcp.error}`);
        assert.ok(report.tcp.sent > 500, `TCP sent ${report.tcp.sent} lines`);
        assert.equal(report.tcp.echoed, report.tcp.sent, 'every TCP line came back');
        assert.equal(report.udp.missingCount, 0, `UDP datagrams lost: ${report.udp.missing.join(', ')}`);
        assert.ok(report.udp.sent > 500, `UDP sent ${report.udp.sent} datagrams`);
        // A retransmission the receiver answers with a D-SACK was spurious (a tail-loss probe on a busy
        // machine): only segments that never arrived count as lost.
        assert.ok(segmentsLost(tcp.client, tcp.server) <= 0, `TCP segments lost client->server: ${JSON.stringify(tcp)}`);
        assert.ok(segmentsLost(tcp.server, tcp.client) <= 0, `TCP segments lost server->client: ${JSON.stringify(tcp)}`);
        assert.ok(report.tcp.maxGapMs < 1_000, `TCP echoes stalled for ${report.tcp.maxGapMs} ms`);

        for (const m of monitors) assert.deepEqual(m.flatnetEvents(), [], `route events (proto 241) in ${m.netns}`);
        assert.deepEqual(await flatnetRoutes(nodeNetns(lab, 'n1')), routesBefore.n1);
        assert.deepEqual(await flatnetRoutes(nodeNetns(lab, 'n2')), routesBefore.n2);

        const afterStatus = await agentStatus(lab, 'n2');
        assert.deepEqual(afterStatus.podCIDRs, before.podCIDRs, 'same subnet lease after the restart');
        assert.equal(afterStatus.ready, true);
        const m2 = await metrics(lab, 'n2');
        assert.equal(datapathChanges(m2), 0, 'the restarted agent found the datapath right and changed nothing');
        assert.equal(metricValue(m2, 'flatnet_cni_config_writes_total'), 0, 'the conflist was not rewritten');
        assert.ok(metricValue(m2, 'flatnet_reconcile_total', 'result="ok"') >= 2, 'the restarted agent reconciled');
        assert.equal(datapathChanges(await metrics(lab, 'n1')), n1ChangesBefore, 'the peer changed nothing meanwhile');
      } catch (e) {
        t.diagnostic(await diagnostics(lab));
        throw e;
      }
    });
  });
}

scenario('host-gw');
scenario('vxlan');
