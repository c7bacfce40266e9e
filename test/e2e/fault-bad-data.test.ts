// Fault injection (root, on the lab): bad data in the lease store, written by someone other than an
// agent -- straight into the embedded store's directory, or under the etcd prefix with etcdctl (layouts in
// src/store/embedded.ts and src/store/etcd.ts). Each record must be rejected by every agent with a log
// line naming the record and the reason, counted in flatnet_invalid_leases_total, and never programmed:
// no route to its subnet appears anywhere, the real peers' routes stay as they were, the agents stay
// ready, and an agent restarted with the garbage in place gets its own subnet back.
//   - garbage: a file that is not a claim / a key whose value is not JSON
//   - malformed lease: well-formed envelope, lease with an address that is not an IP
//   - overlapping subnet: a /23 over the real nodes' /24s; (etcd) a lease naming n1's own /24
//   - another node's underlay address: a lease for a free subnet "reachable" at n2's address
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { restartAgent } from '../../src/lab/lab.ts';
import { etcdctlArgs, planFabric, storeDir } from '../../src/lab/topology.ts';
import type { StoreKind } from '../../src/lab/topology.ts';
import { inNetns, runOk } from '../../src/linux/run.ts';
import {
  agentGet,
  agentLog,
  agentStatus,
  diagnostics,
  flatnetRoutes,
  killAgent,
  labDown,
  labUp,
  metricValue,
  metrics,
  newLab,
  nodeNetns,
  SLACK_MS,
  waitFor,
} from '../tools/fault-lab.ts';
import type { TestLab } from '../tools/fault-lab.ts';

const RESYNC_S = 2;
const NODES = ['n1', 'n2'];

interface Injected {
  /** What the record is. */
  readonly what: string;
  /** Text the agent's log line must carry as key (a substring). */
  readonly key: string;
  /** Pattern its reason must match. */
  readonly reason: RegExp;
  /** Subnets that must never be routed because of it. */
  readonly subnets: readonly string[];
}

function leaseJSON(node: string, podCIDR: string, underlayIP: string, expiresAt: number): Record<string, unknown> {
  return { node, podCIDRs: [podCIDR], underlayIPs: [underlayIP], backend: 'host-gw', expiresAt };
}

/** Embedded store: files dropped into <store>/claims next to the agents' own claim chains. */
function injectEmbedded(lab: TestLab): Injected[] {
  const claims = `${storeDir(lab.root)}/claims`;
  const now = Date.now();
  const later = now + 3_600_000;
  const claim = (subnet: string, lease: Record<string, unknown>): string => JSON.stringify({ subnet, gen: 0, heldUntil: later, since: now, lease });
  writeFileSync(`${claims}/garbage`, 'hello\n');
  writeFileSync(`${claims}/10.244.77.0_24@0`, 'this is not JSON\n');
  writeFileSync(`${claims}/10.244.78.0_24@0`, claim('10.244.78.0/24', leaseJSON('intruder-a', '10.244.78.0/24', 'not-an-ip', later)));
  writeFileSync(`${claims}/10.244.0.0_23@0`, claim('10.244.0.0/23', leaseJSON('intruder-b', '10.244.0.0/23', '172.29.0.99', later)));
  writeFileSync(`${claims}/10.244.79.0_24@0`, claim('10.244.79.0/24', leaseJSON('intruder-c', '10.244.79.0/24', '172.29.0.12', later)));
  return [
    { what: 'garbage file', key: `${claims}/garbage`, reason: /not a claim file name/, subnets: [] },
    { what: 'claim that is not JSON', key: `${claims}/10.244.77.0_24@0`, reason: /not JSON/, subnets: ['10.244.77.0/24'] },
    { what: 'malformed lease', key: `${claims}/10.244.78.0_24@0`, reason: /malformed underlay IP "not-an-ip"/, subnets: ['10.244.78.0/24'] },
    { what: 'overlapping /23', key: 'node:intruder-b', reason: /10\.244\.0\.0\/23 is not a \/24/, subnets: ['10.244.0.0/23'] },
    { what: "another node's underlay address", key: 'node:intruder-c', reason: /underlay IP 172\.29\.0\.12 is already published by node n2/, subnets: ['10.244.79.0/24'] },
  ];
}

/** etcd: keys put under /flatnet/default/ with etcdctl inside the fabric namespace (where etcd listens). */
async function injectEtcd(lab: TestLab, n1CIDR: string): Promise<Injected[]> {
  const fabric = planFabric({ prefix: lab.prefix, topology: 'flat' }).netns;
  const ctl = (...args: string[]): Promise<{ stdout: string }> => runOk(inNetns(fabric, [...etcdctlArgs(lab.root), '--command-timeout=3s', ...args]));
  const grant = /lease ([0-9a-f]+) granted/.exec((await ctl('lease', 'grant', '600')).stdout)?.[1];
  assert.ok(grant, 'etcdctl granted a lease');
  const p = '/flatnet/default/';
  const now = Date.now();
  const later = now + 3_600_000;
  const claim = (node: string): string => JSON.stringify({ node, heldUntil: later, since: now });
  await ctl('put', `${p}leases/garbage`, 'this is not JSON');
  await ctl('put', `${p}subnets/garbage`, '{');
  await ctl('put', `--lease=${grant}`, `${p}leases/intruder-a`, JSON.stringify(leaseJSON('intruder-a', '10.244.78.0/24', 'not-an-ip', later)));
  await ctl('put', `${p}subnets/10.244.0.0_23`, claim('intruder-b'));
  await ctl('put', `--lease=${grant}`, `${p}leases/intruder-b`, JSON.stringify(leaseJSON('intruder-b', '10.244.0.0/23', '172.29.0.98', later)));
  await ctl('put', `--lease=${grant}`, `${p}leases/intruder-d`, JSON.stringify(leaseJSON('intruder-d', n1CIDR, '172.29.0.97', later)));
  await ctl('put', `${p}subnets/10.244.79.0_24`, claim('intruder-c'));
  await ctl('put', `--lease=${grant}`, `${p}leases/intruder-c`, JSON.stringify(leaseJSON('intruder-c', '10.244.79.0/24', '172.29.0.12', later)));
  await ctl('put', `${p}subnets/10.244.80.0_24`, claim('intruder-e'));
  await ctl('put', `${p}leases/intruder-e`, JSON.stringify(leaseJSON('intruder-e', '10.244.80.0/24', '172.29.0.96', later)));
  return [
    { what: 'lease key that is not JSON', key: `${p}leases/garbage`, reason: /not JSON/, subnets: [] },
    { what: 'claim key that is not JSON', key: `${p}subnets/garbage`, reason: /not JSON/, subnets: [] },
    { what: 'malformed lease', key: `${p}leases/intruder-a`, reason: /malformed underlay IP "not-an-ip"/, subnets: ['10.244.78.0/24'] },
    { what: 'overlapping /23', key: `${p}leases/intruder-b`, reason: /10\.244\.0\.0\/23 is not a \/24/, subnets: ['10.244.0.0/23'] },
    { what: "lease naming n1's subnet", key: `${p}leases/intruder-d`, reason: new RegExp(`lists ${n1CIDR.replaceAll('.', '\\.')}, which is not claimed by intruder-d`), subnets: [] },
    { what: "another node's underlay address", key: `${p}leases/intruder-c`, reason: /underlay IP 172\.29\.0\.12 is already published by node n2/, subnets: ['10.244.79.0/24'] },
    { what: 'lease not bound to an etcd lease', key: `${p}leases/intruder-e`, reason: /not bound to an etcd lease/, subnets: ['10.244.80.0/24'] },
  ];
}

function scenario(store: StoreKind): void {
  describe(`bad data in the ${store} store`, () => {
    const lab = newLab('baddata');
    const cidr: Record<string, string[]> = {};
    const routesBefore: Record<string, string[]> = {};
    after(() => labDown(lab));

    it('rejects each record with a log line and a metric, and never programs it', async (t) => {
      await labUp(lab, { nodes: 2, pods: 0, store, resyncSeconds: RESYNC_S });
      try {
        for (const n of NODES) {
          cidr[n] = (await agentStatus(lab, n)).podCIDRs;
          routesBefore[n] = await flatnetRoutes(nodeNetns(lab, n));
          assert.equal(routesBefore[n].length, 1);
          assert.equal(metricValue(await metrics(lab, n), 'flatnet_invalid_leases_total'), 0, `${n}: no invalid lease before`);
        }
        const injected = store === 'embedded' ? injectEmbedded(lab) : await injectEtcd(lab, cidr['n1']![0]!);

        for (const n of NODES) {
          const { ms } = await waitFor(`${n} rejects every injected record`, 2 * RESYNC_S * 1000 + SLACK_MS, () => {
            const warns = agentLog(lab, n).filter((l) => l['msg'] === 'ignoring invalid lease record');
            return injected.every((i) => warns.some((w) => String(w['key']).includes(i.key) && i.reason.test(String(w['reason']))));
          });
          t.diagnostic(`${n} logged all ${injected.length} rejections within ${ms} ms`);
          const m = await metrics(lab, n);
          assert.ok(metricValue(m, 'flatnet_invalid_leases_total') >= injected.length, `${n}: flatnet_invalid_leases_total ${metricValue(m, 'flatnet_invalid_leases_total')}`);
        }
        // At least two more reconciles with the records in place, then nothing of them may be in the kernel.
        await new Promise((r) => setTimeout(r, 2 * RESYNC_S * 1000 + 500));
        for (const n of NODES) {
          const routes = await flatnetRoutes(nodeNetns(lab, n));
          assert.deepEqual(routes, routesBefore[n], `${n}: routes unchanged (only the real peer)`);
          for (const i of injected) for (const s of i.subnets) assert.ok(!routes.some((r) => r.startsWith(`${s} `)), `${n} routes ${s} (${i.what})`);
          const st = await agentStatus(lab, n);
          assert.deepEqual(st.peers.map((p) => p.node), NODES.filter((x) => x !== n), `${n} lists only the real peer`);
          assert.equal((await agentGet(lab, n, '/readyz')).status, 200, `${n} stays ready`);
        }
      } catch (e) {
        t.diagnostic(await diagnostics(lab));
        throw e;
      }
    });

    // A malformed claim (the injected 10.244.0.0/23 in a /24 cluster) must not take a restarting node's
    // own subnet: its pods are using it.
    it('an agent restarted with the bad records in place keeps its subnet and its peers', async (t) => {
      assert.ok(cidr['n2'], 'the first test ran');
      try {
        await killAgent(lab, 'n2');
        await restartAgent(lab.ctx, lab.root, 'n2');
        assert.deepEqual((await agentStatus(lab, 'n2')).podCIDRs, cidr['n2'], 'n2 re-acquired its subnet past the bad records');
        await waitFor('n1 and n2 route each other as before', 2 * RESYNC_S * 1000 + SLACK_MS, async () => {
          for (const n of NODES) if ((await flatnetRoutes(nodeNetns(lab, n))).join() !== routesBefore[n]!.join()) return false;
          return true;
        });
      } catch (e) {
        t.diagnostic(await diagnostics(lab));
        throw e;
      }
    });
  });
}

scenario('embedded');
scenario('etcd');
