// verify across backends, stores and topologies (root): VXLAN on a flat fabric with the embedded store;
// host-gw across routed segments with etcd and dual-stack, where exactly the cross-segment pairs must
// be blocked (and reported unreachable by the agents); VXLAN across the same routed segments, where
// everything must pass. Each lab has its own prefix and root and is torn down in after().
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { run } from '../../src/linux/run.ts';
import { kubeApiEndpoint, kubeTokenFile } from '../../src/lab/topology.ts';

const CLI = resolve(import.meta.dirname, '../../dist/bin/flatnet');
const AGENT = resolve(import.meta.dirname, '../../dist/bin/flatnetd');

interface VerifyJson {
  ok: boolean;
  agents: { node: string; peer: string; reported: boolean | null; expected: boolean; pass: boolean }[];
  checks: { from: string; to: string; family: number; category: string; expectReach: boolean; pass: boolean; why: string }[];
}

/** Removes a lab and checks that nothing with its prefix is left. */
async function labDown(prefix: string, loc: readonly string[]): Promise<void> {
  await run([CLI, 'lab', 'down', ...loc], { timeoutMs: 120_000 });
  const left = (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(prefix));
  assert.deepEqual(left, [], 'lab down left namespaces behind');
}

function scenario(title: string, upArgs: readonly string[], expect: (v: VerifyJson) => void): void {
  describe(title, () => {
    const prefix = `fnt${randomBytes(2).toString('hex')}-`;
    const root = `/tmp/${prefix}lab`;
    const loc = ['--root', root, '--prefix', prefix];
    after(() => labDown(prefix, loc));

    it('comes up and verifies as the backend predicts', async () => {
      assert.ok(existsSync(CLI), `${CLI} missing: run npm run build`);
      assert.ok(existsSync(AGENT), `${AGENT} missing: the lab needs the agent`);
      const up = await run([CLI, 'lab', 'up', ...upArgs, ...loc], { timeoutMs: 180_000 });
      assert.equal(up.code, 0, up.stderr);
      const v = await run([CLI, 'lab', 'verify', '--json', '--root', root], { timeoutMs: 180_000 });
      const report = JSON.parse(v.stdout) as VerifyJson;
      assert.equal(report.ok, true, report.checks.filter((c) => !c.pass).map((c) => c.why).join('\n') + JSON.stringify(report.agents.filter((a) => !a.pass)));
      assert.equal(v.code, 0);
      expect(report);
    });
  });
}

scenario('vxlan on a flat fabric, embedded store', ['--nodes', '3', '--pods', '1', '--backend', 'vxlan'], (v) => {
  assert.ok(v.checks.every((c) => c.expectReach));
  assert.ok(v.checks.some((c) => c.category === 'pod-pod 2000 B across nodes'));
});

scenario('host-gw across routed segments, etcd, dual-stack', ['--nodes', '3', '--pods', '1', '--backend', 'host-gw', '--store', 'etcd', '--ipv6', '--topology', 'routed'], (v) => {
  // n1 and n3 share fab0; n2 is alone on fab1.
  const blocked = v.checks.filter((c) => !c.expectReach);
  assert.ok(blocked.length > 0);
  assert.ok(blocked.every((c) => [c.from, c.to].some((x) => x === 'n2' || x.endsWith('n2-p1'))), 'only pairs involving n2 are blocked');
  assert.ok(v.checks.some((c) => c.family === 6 && c.category === 'pod-pod across nodes' && c.expectReach && c.pass));
  assert.ok(v.checks.some((c) => c.family === 6 && c.category === 'pod-outside masquerade' && c.pass));
  const n1n2 = v.agents.find((a) => a.node === 'n1' && a.peer === 'n2');
  assert.equal(n1n2?.reported, false, 'agent reports the cross-segment peer unreachable');
  assert.equal(v.agents.find((a) => a.node === 'n1' && a.peer === 'n3')?.reported, true);
});

scenario('vxlan across routed segments, etcd, dual-stack', ['--nodes', '3', '--pods', '1', '--backend', 'vxlan', '--store', 'etcd', '--ipv6', '--topology', 'routed'], (v) => {
  assert.ok(v.checks.every((c) => c.expectReach), 'vxlan reaches across segments');
  assert.ok(v.agents.every((a) => a.reported === true));
  assert.ok(v.checks.some((c) => c.family === 6 && c.category === 'pod-pod 2000 B across nodes' && c.pass));
});

// The Kubernetes-API store against the lab's STAND-IN API server (src/lab/kube-apiserver-standin.ts; there
// is no kube-apiserver here), which also assigns podCIDRs as kube-controller-manager would. Besides verify:
// the agents' annotations are on the Node objects, and deleting a Node withdraws the peers' routes to it.
describe('host-gw, kubernetes store (stand-in API server), dual-stack', () => {
  const prefix = `fnt${randomBytes(2).toString('hex')}-`;
  const root = `/tmp/${prefix}lab`;
  const loc = ['--root', root, '--prefix', prefix];
  after(() => labDown(prefix, loc));

  it('leases the API-assigned podCIDRs, verifies, and withdraws routes when a Node is deleted', async () => {
    const up = await run([CLI, 'lab', 'up', '--nodes', '3', '--pods', '1', '--store', 'kubernetes', '--ipv6', ...loc], { timeoutMs: 180_000 });
    assert.equal(up.code, 0, up.stderr);
    const v = await run([CLI, 'lab', 'verify', '--json', '--root', root], { timeoutMs: 180_000 });
    const report = JSON.parse(v.stdout) as VerifyJson;
    assert.equal(report.ok, true, report.checks.filter((c) => !c.pass).map((c) => c.why).join('\n'));
    assert.ok(report.checks.some((c) => c.family === 6 && c.category === 'pod-pod across nodes' && c.pass));

    // What the agents published, read back through the API as any client would.
    const token = readFileSync(kubeTokenFile(root), 'utf8').trim();
    const fetchNode = `fetch('${kubeApiEndpoint()}/api/v1/nodes/n3', { headers: { authorization: 'Bearer ${token}' } }).then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })`;
    const get = await run(['ip', 'netns', 'exec', `${prefix}fabric`, process.execPath, '-e', fetchNode]);
    assert.equal(get.code, 0, get.stderr);
    const n3 = JSON.parse(get.stdout) as { spec: { podCIDRs: string[] }; metadata: { annotations: Record<string, string> } };
    assert.equal(n3.metadata.annotations['flatnet.dev/backend'], 'host-gw');
    assert.match(n3.metadata.annotations['flatnet.dev/underlay-ips'] ?? '', /^172\.29\.0\.13(,|$)/);
    const [v4] = n3.spec.podCIDRs;
    assert.ok(v4 && (await run(['ip', '-n', `${prefix}n1`, 'route', 'show', v4])).stdout.includes('via 172.29.0.13'), 'n1 routes to n3 before');

    const rm = await run([CLI, 'lab', 'remove-node', 'n3', ...loc], { timeoutMs: 60_000 });
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout + rm.stderr, /Node deleted/);
    const t0 = Date.now();
    while ((await run(['ip', '-n', `${prefix}n1`, 'route', 'show', v4])).stdout.trim() !== '') {
      assert.ok(Date.now() - t0 < 15_000, `n1 still routes ${v4} 15 s after the Node was deleted`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
