// Fault injection (root, on the lab): configuration drift. Both nodes' iptables FORWARD policy is DROP
// (iptables-nft, as Docker leaves it), set while the agents run: they must add their accept rules by
// themselves. Then someone (an admin, another tool) deletes what the agent put in the kernel on node n1:
// its route to the peer's pod subnet, the nftables table `inet flatnet`, its accept rules in the iptables
// FORWARD chain, the bridge's gateway address, and (VXLAN) the device `flat.vx` with everything on it.
// Nothing tells the agent; its periodic resync (2 s here) must restore each within two resync periods,
// count it (flatnet_datapath_changes_total / flatnet_masquerade_applies_total /
// flatnet_forward_accept_changes_total), and pods on n1 must reach the pod on n2 again afterwards.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { spawnChild } from '../../src/lab/processes.ts';
import type { Backend } from '../../src/lab/topology.ts';
import { inNetns, run, runOk } from '../../src/linux/run.ts';
import {
  datapathChanges,
  diagnostics,
  flatnetRoutes,
  labDown,
  labUp,
  metricValue,
  metrics,
  newLab,
  nodeNetns,
  SLACK_MS,
  waitFor,
} from '../tools/fault-lab.ts';

const RESYNC_S = 2;
/** Two resync periods, plus the reconcile's own run time on a busy 2-core machine. */
const RESTORE_BOUND_MS = 2 * RESYNC_S * 1000 + SLACK_MS;

function scenario(backend: Backend): void {
  describe(`configuration drift on a node (${backend})`, () => {
    const lab = newLab('drift');
    let echo: ChildProcess | undefined;
    after(async () => {
      if (echo && echo.exitCode === null) echo.kill('SIGKILL');
      await labDown(lab);
    });

    it('restores every deleted piece within two resync periods', async (t) => {
      const s = await labUp(lab, { nodes: 2, pods: 1, backend, resyncSeconds: RESYNC_S });
      const n1 = nodeNetns(lab, 'n1');
      const client = s.pods.find((p) => p.node === 'n1');
      const server = s.pods.find((p) => p.node === 'n2');
      assert.ok(client && server && server.ips[0]);
      const serverIP = server.ips[0];
      echo = spawnChild(inNetns(server.netns, [lab.ctx.paths.self, '__echo', '--tcp', '7801', '--udp', '7801', '--ttl', '300']));
      let echoOut = '';
      echo.stdout?.on('data', (b: Buffer) => (echoOut += b.toString('utf8')));
      await waitFor('echo server listening', 20_000, () => echoOut.includes('listening'));
      const reaches = async (): Promise<boolean> => (await run(inNetns(client.netns, [lab.ctx.paths.self, '__probe', 'tcp', serverIP, '7801', '--timeout', '1000']))).code === 0;
      assert.ok(await reaches(), 'n1-p1 reaches n2-p1 before any damage');

      const routesBefore = await flatnetRoutes(n1);
      assert.equal(routesBefore.length, 1, `n1 routes n2: ${routesBefore.join('; ')}`);
      const peerCIDR = routesBefore[0]!.split(' ')[0]!;
      const nftBefore = (await runOk(inNetns(n1, ['nft', 'list', 'table', 'inet', 'flatnet']))).stdout;
      const gateway = `${(await run(['ip', '-n', n1, '-j', '-4', 'addr', 'show', 'dev', 'flat0'])).stdout.match(/"local":"(10\.244\.[0-9.]+)","prefixlen":24/)?.[1] ?? '?'}/24`;
      assert.match(gateway, /^10\.244\.\d+\.1\/24$/, 'flat0 holds the pod subnet gateway');
      const results: string[] = [];

      // Docker's FORWARD DROP, on both nodes: pods cannot reach each other until the agents' resync adds their rules.
      const ourRules = async (): Promise<string> => (await runOk(inNetns(n1, ['iptables-nft', '-w', '-S', 'FORWARD']))).stdout.split('\n').filter((l) => l.includes('--comment "flatnet:')).join('\n');
      for (const n of ['n1', 'n2']) await runOk(inNetns(nodeNetns(lab, n), ['iptables-nft', '-w', '-P', 'FORWARD', 'DROP']));
      const accepted = await waitFor('agents accept cluster traffic under FORWARD DROP', RESTORE_BOUND_MS, async () => {
        for (const n of ['n1', 'n2']) if (metricValue(await metrics(lab, n), 'flatnet_forward_accept_rules') !== 2) return false;
        return reaches();
      }, 100);
      results.push(`FORWARD DROP set: rules in place and pods reaching in ${accepted.ms} ms`);
      const rulesBefore = await ourRules();
      assert.equal(rulesBefore.split('\n').length, 2, rulesBefore);

      /** Damages, then waits for the agent to put it back; returns how long that took. */
      const drift = async (what: string, damage: string[], restored: () => Promise<boolean>): Promise<void> => {
        const m0 = await metrics(lab, 'n1');
        await runOk(damage);
        assert.equal(await restored(), false, `${what}: the damage took effect`);
        const tDamage = Date.now();
        const r = await waitFor(`${what} restored`, RESTORE_BOUND_MS, restored, 50);
        const m1 = await metrics(lab, 'n1');
        const delta = (name: string, labels = ''): number => metricValue(m1, name, labels) - metricValue(m0, name, labels);
        results.push(
          `${what}: ${r.ms} ms (datapath changes +${datapathChanges(m1) - datapathChanges(m0)}, masquerade applies +${delta('flatnet_masquerade_applies_total')}, ` +
            `forward accept rules added +${delta('flatnet_forward_accept_changes_total', 'op="added"')})`,
        );
        await waitFor(`n1-p1 reaches n2-p1 again after ${what}`, RESTORE_BOUND_MS, reaches, 200);
        assert.ok(Date.now() - tDamage < 3 * RESTORE_BOUND_MS);
      };

      try {
        await drift('route to the peer', ['ip', '-n', n1, 'route', 'del', peerCIDR], async () => (await flatnetRoutes(n1)).join() === routesBefore.join());
        await drift('nft table inet flatnet', inNetns(n1, ['nft', 'delete', 'table', 'inet', 'flatnet']), async () => {
          const r = await run(inNetns(n1, ['nft', 'list', 'table', 'inet', 'flatnet']));
          return r.code === 0 && r.stdout === nftBefore;
        });
        await drift('iptables FORWARD accept rules', inNetns(n1, ['iptables-nft', '-w', '-F', 'FORWARD']), async () => (await ourRules()) === rulesBefore);
        await drift('bridge gateway address', ['ip', '-n', n1, 'addr', 'del', gateway, 'dev', 'flat0'], async () => (await run(['ip', '-n', n1, '-4', 'addr', 'show', 'dev', 'flat0'])).stdout.includes(` ${gateway} `));
        if (backend === 'vxlan') {
          // The device as `ip -d link` describes it (without its index and state), and its tx checksum
          // offload, which the agent decides by kernel (--vxlan-tx-csum, flannel#1279): a recreated
          // device must come back exactly so.
          const vx = async (): Promise<string> => {
            const link = (await run(['ip', '-n', n1, '-d', '-o', 'link', 'show', 'dev', 'flat.vx'])).stdout.replace(/^\d+: /, '').replace(/ state \S+/, '');
            const csum = /tx-checksum-ip-generic: \S+/.exec((await run(inNetns(n1, ['ethtool', '-k', 'flat.vx']))).stdout)?.[0] ?? 'no ethtool answer';
            return `${link.trim()} ${csum}`;
          };
          const vxBefore = await vx();
          assert.match(vxBefore, /vxlan id 4242 .*tx-checksum-ip-generic: (on|off)/);
          await drift('VXLAN device flat.vx', ['ip', '-n', n1, 'link', 'del', 'flat.vx'], async () => (await vx()) === vxBefore && (await flatnetRoutes(n1)).join() === routesBefore.join());
        }
        t.diagnostic(results.join('; '));
        const m = await metrics(lab, 'n1');
        assert.ok(metricValue(m, 'flatnet_masquerade_applies_total') >= 2, 'the masquerade table was applied again');
        assert.equal(metricValue(m, 'flatnet_forward_accept_changes_total', 'op="added"'), 4, 'accept rules added twice: at DROP, after the flush');
        assert.equal(metricValue(m, 'flatnet_forward_accept_rules'), 2);
        assert.equal(metricValue(m, 'flatnet_ready'), 1);
      } catch (e) {
        t.diagnostic(results.join('; '));
        t.diagnostic(await diagnostics(lab));
        throw e;
      }
    });
  });
}

scenario('host-gw');
scenario('vxlan');
