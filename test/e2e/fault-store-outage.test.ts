// Fault injection (root, on the lab): the etcd store goes away for 30 s. A 3-node lab on etcd keeps
// cross-node TCP and UDP traffic between two pods running; the lab's etcd is killed (SIGKILL, by the
// pid the lab recorded) and started again on its data 30 s later. Throughout: every UDP datagram
// answered, the TCP connection intact, no protocol-241 route added or deleted on any node. Every agent's
// /readyz must say 503 naming the store within a bounded time, and 200 again by itself once etcd is
// back; leases are neither lost nor duplicated (same podCIDRs per node, distinct, and every node's lease
// key back in etcd).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { restartEtcd } from '../../src/lab/lab.ts';
import { cmdlineOf, isAlive } from '../../src/lab/processes.ts';
import { copyFileSync } from 'node:fs';
import { openPki } from '../../src/lab/pki.ts';
import { etcdClientTLS, etcdPkiDir, etcdctlArgs, planFabric } from '../../src/lab/topology.ts';
import { inNetns, run, runOk } from '../../src/linux/run.ts';
import { startTraffic } from '../tools/traffic.ts';
import type { TrafficProcess } from '../tools/traffic.ts';
import {
  RouteMonitor,
  agentGet,
  agentStatus,
  counterDelta,
  diagnostics,
  flatnetRoutes,
  labDown,
  labUp,
  metricValue,
  metrics,
  newLab,
  nodeNetns,
  segmentsLost,
  SLACK_MS,
  sleep,
  state,
  tcpCounters,
  waitFor,
} from '../tools/fault-lab.ts';

const RESYNC_S = 2;
const OUTAGE_MS = 30_000;
const NODES = ['n1', 'n2', 'n3'];
/** A reconcile every resync, each store call bounded by the client's 5 s deadline. */
const DETECT_BOUND_MS = 2 * RESYNC_S * 1000 + 5_000 + SLACK_MS;
/** The agent's next reconcile after etcd answers, plus gRPC's reconnect backoff after a 30 s outage. */
const RECOVER_BOUND_MS = 30_000;

describe('etcd store outage of 30 s', () => {
  const lab = newLab('outage');
  const running: TrafficProcess[] = [];
  const monitors: RouteMonitor[] = [];
  after(async () => {
    for (const p of running) p.kill();
    for (const m of monitors) m.stop();
    await labDown(lab);
  });

  it('keeps pods talking, reports the outage on /readyz, recovers by itself with the same leases', async (t) => {
    const s = await labUp(lab, { nodes: 3, pods: 1, store: 'etcd', resyncSeconds: RESYNC_S });
    const fabric = planFabric(s.options).netns;
    const etcdLeases = async (): Promise<Record<string, string[]>> => {
      const r = await runOk(inNetns(fabric, [...etcdctlArgs(s.options.root), '--command-timeout=3s', 'get', '--prefix', '/flatnet/default/leases/', '--print-value-only']));
      const out: Record<string, string[]> = {};
      for (const line of r.stdout.split('\n').filter((l) => l.startsWith('{'))) {
        const l = JSON.parse(line) as { node: string; podCIDRs: string[] };
        out[l.node] = l.podCIDRs;
      }
      return out;
    };
    try {
      // The lab's etcd is secured as production etcd is: the agents got in with their own client
      // certificates, and a client with only the CA (no certificate) does not.
      const noCert = etcdctlArgs(s.options.root).slice(0, 5);
      assert.deepEqual(noCert.slice(3, 4), ['--cacert']);
      const anonymous = await run(inNetns(fabric, [...noCert, '--dial-timeout=2s', '--command-timeout=2s', 'get', '--prefix', '/flatnet/']));
      assert.notEqual(anonymous.code, 0, `etcd answered a client without a certificate: ${anonymous.stdout}`);
      assert.deepEqual(Object.keys(await etcdLeases()).sort(), [...NODES].sort(), 'with the lab\'s client certificate every node\'s lease is there');
      // Each agent exports when its client certificate expires (the lab's are valid for 30 days).
      const expiry = metricValue(await metrics(lab, 'n1'), 'flatnet_etcd_client_cert_expiry_timestamp_seconds');
      assert.ok(Math.abs(expiry - (Date.now() / 1000 + 30 * 86_400)) < 86_400, `client certificate expiry metric: ${expiry}`);
      const client = s.pods.find((p) => p.node === 'n1');
      const server = s.pods.find((p) => p.node === 'n2');
      assert.ok(client && server && server.ips[0]);
      const cidrsBefore: Record<string, string[]> = {};
      const routesBefore: Record<string, string[]> = {};
      for (const n of NODES) {
        cidrsBefore[n] = (await agentStatus(lab, n)).podCIDRs;
        routesBefore[n] = await flatnetRoutes(nodeNetns(lab, n));
        assert.equal(routesBefore[n].length, 2, `${n} routes both peers: ${routesBefore[n].join('; ')}`);
        assert.equal((await agentGet(lab, n, '/readyz')).status, 200, `${n} ready before the outage`);
      }
      assert.deepEqual(await etcdLeases(), cidrsBefore, 'etcd holds one lease per node');
      for (const n of NODES) {
        const m = new RouteMonitor(nodeNetns(lab, n));
        monitors.push(m);
        await m.ready();
      }
      const tcp0 = { client: await tcpCounters(client.netns), server: await tcpCounters(server.netns) };
      const traffic = await startTraffic(server.netns, client.netns, server.ips[0]);
      running.push(traffic.client, traffic.server);

      const etcdPid = state(lab).etcdPid;
      assert.ok(etcdPid !== undefined && isAlive(etcdPid) && cmdlineOf(etcdPid)?.includes(lab.root), 'the lab recorded its running etcd');
      const tDown = Date.now();
      process.kill(etcdPid, 'SIGKILL');
      await waitFor('etcd gone', 5_000, () => !isAlive(etcdPid));

      // Every agent notices within the bound, and says why.
      const detected = await Promise.all(
        NODES.map((n) =>
          waitFor(`${n} /readyz reports the store outage`, DETECT_BOUND_MS, async () => {
            const r = await agentGet(lab, n, '/readyz');
            return r.status === 503 && /store/.test(r.body) ? r.body.trim() : undefined;
          }),
        ),
      );
      t.diagnostic(`outage detected after ${detected.map((d, i) => `${NODES[i]} ${d.ms} ms (${d.value})`).join(', ')}`);
      for (const n of NODES) {
        const st = await agentStatus(lab, n);
        assert.equal(st.ready, false);
        assert.equal(st.peers.length, 2, `${n} keeps its peers during the outage`);
        assert.equal(metricValue(await metrics(lab, n), 'flatnet_store_up'), 0, `${n} flatnet_store_up 0`);
        assert.equal((await agentGet(lab, n, '/healthz')).status, 200, `${n} stays live (healthz) during the outage`);
      }
      await sleep(Math.max(0, OUTAGE_MS - (Date.now() - tDown)));
      // Still serving and still routing at the end of the outage.
      for (const n of NODES) assert.deepEqual(await flatnetRoutes(nodeNetns(lab, n)), routesBefore[n], `${n} kept its routes through the outage`);

      await restartEtcd(lab.ctx, lab.root);
      const tUp = Date.now();
      const recovered = await Promise.all(
        NODES.map((n) => waitFor(`${n} /readyz 200 after etcd returned`, RECOVER_BOUND_MS, async () => (await agentGet(lab, n, '/readyz')).status === 200, 200)),
      );
      t.diagnostic(`outage ${tUp - tDown} ms; agents ready again after ${recovered.map((r, i) => `${NODES[i]} ${r.ms} ms`).join(', ')}`);
      // One more resync with the store answering, then stop the traffic.
      await sleep(RESYNC_S * 1000 + 500);
      const report = await traffic.client.stop();
      const tcp = { client: counterDelta(tcp0.client, await tcpCounters(client.netns)), server: counterDelta(tcp0.server, await tcpCounters(server.netns)) };
      t.diagnostic(`traffic ${JSON.stringify({ ...report, udp: { ...report.udp, missing: report.udp.missing.slice(0, 5) } })}; TCP counters ${JSON.stringify(tcp)}`);

      assert.equal(report.tcp.error, undefined, `TCP connection broke: ${report.tcp.error}`);
      assert.equal(report.tcp.echoed, report.tcp.sent);
      assert.ok(report.udp.sent > 2_000, `UDP sent ${report.udp.sent}`);
      assert.equal(report.udp.missingCount, 0, `UDP datagrams lost: ${report.udp.missing.join(', ')}`);
      assert.ok(segmentsLost(tcp.client, tcp.server) <= 0 && segmentsLost(tcp.server, tcp.client) <= 0, `TCP segments lost: ${JSON.stringify(tcp)}`);
      for (const m of monitors) assert.deepEqual(m.flatnetEvents(), [], `route events (proto 241) in ${m.netns}`);

      const cidrsAfter: Record<string, string[]> = {};
      for (const n of NODES) {
        const st = await agentStatus(lab, n);
        cidrsAfter[n] = st.podCIDRs;
        assert.deepEqual(st.peers.map((p) => p.node).sort(), NODES.filter((x) => x !== n), `${n} lists both peers`);
        assert.deepEqual(await flatnetRoutes(nodeNetns(lab, n)), routesBefore[n], `${n} routes unchanged`);
        assert.equal(metricValue(await metrics(lab, n), 'flatnet_store_up'), 1);
      }
      assert.deepEqual(cidrsAfter, cidrsBefore, 'same subnet per node after the outage');
      assert.equal(new Set(Object.values(cidrsAfter).flat()).size, NODES.length, 'no two nodes share a subnet');
      assert.deepEqual(await etcdLeases(), cidrsBefore, 'every lease key is back in etcd, none extra');
    } catch (e) {
      t.diagnostic(await diagnostics(lab));
      throw e;
    }
  });

  // On the same lab: n1's client certificate rotated in place, as cert-manager would, but caught half-way
  // first (the new certificate beside the old key). The agent must refuse the half-way set and keep working,
  // then take the whole set at its next full resync, without a restart.
  it('takes rotated etcd credential files without a restart, and refuses a half-rotated set', async (t) => {
    try {
      const files = etcdClientTLS(lab.root, 'n1');
      const fresh = await openPki(etcdPkiDir(lab.root)).client('n1-rotated', 3);
      const pid = state(lab).nodes.find((n) => n.name === 'n1')?.agentPid;
      assert.ok(pid !== undefined);
      const reloads = async (result: string): Promise<number> => metricValue(await metrics(lab, 'n1'), 'flatnet_etcd_credential_reloads_total', `result="${result}"`);
      const bound = 2 * RESYNC_S * 1000 + SLACK_MS;

      copyFileSync(fresh.cert, files.certFile);
      await waitFor('n1 to refuse the half-rotated set', bound, async () => (await reloads('refused')) >= 1);
      assert.equal(await reloads('applied'), 0);
      assert.equal((await agentGet(lab, 'n1', '/readyz')).status, 200, 'still ready on the credentials in use');

      copyFileSync(fresh.key, files.keyFile);
      await waitFor('n1 to take the rotated set', bound, async () => (await reloads('applied')) >= 1);
      const expiry = metricValue(await metrics(lab, 'n1'), 'flatnet_etcd_client_cert_expiry_timestamp_seconds');
      assert.ok(Math.abs(expiry - (Date.now() / 1000 + 3 * 86_400)) < 86_400, `the expiry metric is the new certificate's: ${expiry}`);
      // On the new client: the next lease renewal (every third of the lab's 30 s TTL) succeeds, every
      // resync's listing too, and it is the same agent process.
      const renewed = metricValue(await metrics(lab, 'n1'), 'flatnet_lease_renewals_total', 'result="ok"');
      const errors = metricValue(await metrics(lab, 'n1'), 'flatnet_lease_renewals_total', 'result="error"');
      await waitFor('a renewal over the new client', 10_000 + SLACK_MS, async () => metricValue(await metrics(lab, 'n1'), 'flatnet_lease_renewals_total', 'result="ok"') > renewed);
      const m = await metrics(lab, 'n1');
      assert.equal(metricValue(m, 'flatnet_lease_renewals_total', 'result="error"'), errors, 'no renewal failed');
      assert.equal(metricValue(m, 'flatnet_store_up'), 1);
      assert.equal((await agentGet(lab, 'n1', '/readyz')).status, 200);
      assert.equal(state(lab).nodes.find((n) => n.name === 'n1')?.agentPid, pid, 'the same agent process');
    } catch (e) {
      t.diagnostic(await diagnostics(lab));
      throw e;
    }
  });
});
