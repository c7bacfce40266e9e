// The lab end to end (root): up, refusing a second up, status JSON contract, verify, trace, changing the
// cluster while it runs, and down -- including down after state.json was corrupted. Uses its own prefix
// and root so it never touches a user's lab, and runs `lab down` in after() even on failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { resolve } from 'node:path';
import { run } from '../../src/linux/run.ts';
import { calls, seriesOf } from '../tools/cni-agent.ts';

const CLI = resolve(import.meta.dirname, '../../dist/bin/flatnet');
const AGENT = resolve(import.meta.dirname, '../../dist/bin/flatnetd');
const PREFIX = `fnt${randomBytes(2).toString('hex')}-`;
const ROOT = `/tmp/${PREFIX}lab`;
const loc = ['--root', ROOT, '--prefix', PREFIX];

async function lab(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run([CLI, 'lab', ...args], { timeoutMs: 180_000 });
}

async function namespaces(): Promise<string[]> {
  const r = await run(['ip', 'netns', 'list']);
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(PREFIX));
}

/** The agent's answer over its unix socket (not bound to any network namespace). */
function agentGet(socketPath: string, path: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = request({ socketPath, path }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => (body += c.toString('utf8')));
      r.on('end', () => res(body));
    });
    req.on('error', rej);
    req.end();
  });
}

interface StatusJson {
  nodes: { name: string; netns: string; underlayIPs: string[]; podCIDRs: string[]; pluginCalls: { ok: number; error: number; declined: number; undone: number; inFlight: number } | null }[];
  pods: { name: string; netns: string; node: string; ips: string[]; containerID: string }[];
  outside: { netns: string; ips: string[] };
}

async function status(): Promise<StatusJson> {
  const r = await lab('status', '--json', '--root', ROOT);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as StatusJson;
}

describe('lab lifecycle (flat, host-gw, embedded store)', () => {
  before(() => {
    assert.ok(existsSync(CLI), `${CLI} missing: run npm run build`);
    assert.ok(existsSync(AGENT), `${AGENT} missing: the lab needs the agent`);
  });
  after(async () => {
    await lab('down', ...loc);
    assert.deepEqual(await namespaces(), [], 'lab down left namespaces behind');
  });

  it('comes up with 2 nodes and 2 pods each', async () => {
    const r = await lab('up', '--nodes', '2', '--pods', '2', ...loc);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /agents ready/);
    const ns = await namespaces();
    for (const n of ['fabric', 'out', 'n1', 'n2', 'n1-p1', 'n1-p2', 'n2-p1', 'n2-p2']) assert.ok(ns.includes(PREFIX + n), `${PREFIX}${n} missing`);
  });

  it('refuses a second up and names lab down', async () => {
    const r = await lab('up', ...loc);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already exists.*lab down/);
  });

  it('reports the status JSON contract', async () => {
    const s = await status();
    assert.deepEqual(s.nodes.map((n) => [n.name, n.netns, n.underlayIPs]), [['n1', `${PREFIX}n1`, ['172.29.0.11']], ['n2', `${PREFIX}n2`, ['172.29.0.12']]]);
    for (const n of s.nodes) assert.match(n.podCIDRs[0] ?? '', /^10\.244\.\d+\.0\/24$/);
    assert.equal(s.pods.length, 4);
    for (const p of s.pods) {
      assert.equal(p.netns, p.name);
      assert.match(p.ips[0] ?? '', /^10\.244\.\d+\.\d+$/, 'addresses carry no prefix length');
      const cidr = s.nodes.find((n) => n.name === p.node)?.podCIDRs[0] ?? '';
      assert.ok(p.ips[0]?.startsWith(cidr.split('.').slice(0, 3).join('.') + '.'), `${p.name} ${p.ips[0]} in ${cidr}`);
    }
    assert.deepEqual(s.outside, { netns: `${PREFIX}out`, ips: ['203.0.113.10'] });
  });

  it('verifies the network model: no NAT between pods, masquerade to the outside, 2000 B across nodes', async () => {
    const r = await lab('verify', '--json', '--root', ROOT);
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: { pass: boolean; category: string; why: string }[] };
    assert.equal(report.ok, true, report.checks.filter((c) => !c.pass).map((c) => c.why).join('\n'));
    assert.equal(r.code, 0);
    for (const cat of ['pod-pod same node', 'pod-pod across nodes', 'pod-pod 2000 B across nodes', 'node-pod own node', 'node-pod other node', 'pod-outside masquerade']) {
      assert.ok(report.checks.some((c) => c.category === cat), `no ${cat} checks`);
    }
  });

  it('traces pod to pod across nodes through the fabric', async () => {
    const r = await lab('trace', `${PREFIX}n1-p1`, `${PREFIX}n2-p1`, '--root', ROOT);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /via 172\.29\.0\.12 dev eth0/);
    assert.match(r.stdout, /bridge fab0 in .*fabric: FDB .* -> port fab-n2/);
    assert.match(r.stdout, new RegExp(`${PREFIX}n2-p1 \\(in eth0\\): .* is local: delivered`));
  });

  it('adds and removes a pod with CNI ADD/DEL and the result cache', async () => {
    const add = await lab('add-pod', 'n2', 'web', '--root', ROOT);
    assert.equal(add.code, 0, add.stderr);
    const pod = (await status()).pods.find((p) => p.name === `${PREFIX}n2-web`);
    assert.ok(pod);
    const cache = `${ROOT}/n2/cni-cache/results/flatnet-${pod.containerID}-eth0`;
    assert.ok(existsSync(cache), 'result cache written on ADD');
    const rm = await lab('remove-pod', `${PREFIX}n2-web`, '--root', ROOT);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(existsSync(cache), false, 'result cache removed after DEL');
    assert.ok(!(await namespaces()).includes(`${PREFIX}n2-web`));
    const reservations = readdirSync(`${ROOT}/n2/ipam/flatnet`).filter((f) => f === pod.ips[0]);
    assert.deepEqual(reservations, [], 'address released');
    // The lab's runtime calls the plugin in the node's namespace and the host's mount namespace, where
    // the node's agent serves it (docs/cni-plugin.md): both calls of this pod were served, none declined.
    const st = JSON.parse(await agentGet(`${ROOT}/n2/agent.sock`, '/status')) as { cniSocket: string | null };
    assert.match(st.cniSocket ?? '', /^\/run\/flatnet\/cni-\d+\.sock$/);
    const m = seriesOf(await agentGet(`${ROOT}/n2/agent.sock`, '/metrics'));
    assert.equal(calls(m, 'ADD', 'ok'), 3, 'the two pods of lab up and this one');
    assert.equal(calls(m, 'DEL', 'ok'), 1);
    assert.equal(calls(m, 'ADD', 'declined') + calls(m, 'DEL', 'declined'), 0);
    // `lab status` shows the same calls, from the agent's /status.
    const all = (result: string): number => calls(m, undefined, result);
    const n2 = (await status()).nodes.find((n) => n.name === 'n2');
    assert.deepEqual(n2?.pluginCalls, { ok: all('ok'), error: all('error'), declined: all('declined'), undone: 0, inFlight: 0 });
    assert.ok(all('ok') >= 4, `at least the three ADDs and the DEL (${all('ok')})`);
    const text = await lab('status', '--root', ROOT);
    assert.match(text.stdout, new RegExp(`^\\s+n2\\s.*\\s${all('ok') + all('error')} served, ${all('declined')} declined\\s`, 'm'));
  });

  it('adds a node that joins, and removes it again: peers withdraw its subnet', async () => {
    const add = await lab('add-node', '--pods', '1', '--root', ROOT);
    assert.equal(add.code, 0, add.stderr);
    assert.ok((await status()).nodes.some((n) => n.name === 'n3'));
    const v = await lab('verify', '--root', ROOT);
    assert.equal(v.code, 0, v.stdout);
    const rm = await lab('remove-node', 'n3', '--root', ROOT);
    assert.equal(rm.code, 0, rm.stderr);
    assert.ok(!(await namespaces()).includes(`${PREFIX}n3`));
    // n1's agent drops n3 from its peers once the released lease reaches it (watch or resync).
    const deadline = Date.now() + 20_000;
    let peers: string[] = [];
    while (Date.now() < deadline) {
      peers = (JSON.parse(await agentGet(`${ROOT}/n1/agent.sock`, '/status')) as { peers: { node: string }[] }).peers.map((p) => p.node);
      if (!peers.includes('n3')) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.deepEqual(peers, ['n2']);
  });

  it('goes down completely, is idempotent, and recovers from a corrupt state.json', async () => {
    writeFileSync(`${ROOT}/state.json`, '{ corrupt');
    const d1 = await lab('down', ...loc);
    assert.equal(d1.code, 0, d1.stderr);
    assert.deepEqual(await namespaces(), []);
    assert.equal(existsSync(ROOT), false);
    const d2 = await lab('down', ...loc);
    assert.equal(d2.code, 0, d2.stderr);
  });
});
