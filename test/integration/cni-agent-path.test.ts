// The plugin's fast path: calls offered by the launcher (native/launcher.c) to the agent's server
// (src/agent/cni-server.ts, run on its own by test/tools/cni-server-host.ts in a throwaway node
// namespace), against the real kernel. What must hold: a served call does what a standalone one does;
// anything the agent should not serve runs standalone; an agent that dies mid-call answers "try again";
// an ADD whose caller died is undone; the server survives garbage on its socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { buildIdOf, removeStaleCniSocket } from '../../src/agent/cni-server.ts';
import { hostVethName } from '../../src/plugin/names.ts';
import { Scratch, canPing, inNs } from '../tools/netns.ts';
import { PLUGIN, PLUGIN_DIR, callPlugin, netnsPath } from '../tools/cni.ts';
import { waitFor } from '../tools/wait.ts';
import { ServerHost, calls } from '../tools/cni-agent.ts';
import { libcni } from '../tools/libcni.ts';


function conf(dataDir: string, extra: Record<string, unknown> = {}) {
  return { cniVersion: '1.1.0', name: 'fnt-agentpath', type: 'flatnet', bridge: 'fntap0', ipam: { ranges: [[{ subnet: '10.97.0.0/24' }]], dataDir }, ...extra };
}

function reservations(dataDir: string): string[] {
  const dir = join(dataDir, 'fnt-agentpath');
  return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
}

async function hostLinks(node: string): Promise<string[]> {
  return (JSON.parse(await inNs(node, ['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
}

/** A frame 1 as the launcher writes it (see native/launcher.c). */
function frame(fields: readonly string[]): Buffer {
  const body = Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

/** Sends raw bytes to the server and ends its side, as the launcher does after stdin; resolves with all it answered before closing. */
function exchange(socket: string, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' || (e as NodeJS.ErrnoException).code === 'EPIPE' ? resolve(got) : reject(e)));
    s.on('close', () => resolve(got));
    s.end(bytes);
  });
}

/**
 * A delegated IPAM plugin (a shell script) that logs each call and answers ADD with one address. The
 * first call of `slowVerb` (default ADD) marks its start and waits `seconds` before going on.
 */
function slowIpam(dir: string, seconds: number, slowVerb = 'ADD'): { cniPath: string; started: string; log: string } {
  const started = join(dir, 'started');
  const log = join(dir, 'calls');
  const script = [
    '#!/bin/sh',
    `echo "$CNI_COMMAND" >> ${log}`,
    `if [ "$CNI_COMMAND" = ${slowVerb} ] && [ ! -e ${started} ]; then`,
    `  touch ${started}`,
    `  sleep ${seconds}`,
    'fi',
    'if [ "$CNI_COMMAND" = ADD ]; then',
    '  echo \'{"cniVersion":"1.1.0","ips":[{"address":"10.97.0.77/24","gateway":"10.97.0.1"}]}\'',
    'fi',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'fnt-slow-ipam'), script, { mode: 0o755 });
  return { cniPath: `${dir}:${PLUGIN_DIR}`, started, log };
}

describe('the plugin served by the agent', () => {
  const s = new Scratch();
  let node = '';
  let dataDir = '';
  let host: ServerHost | undefined;
  before(async () => {
    node = await s.netns('node');
    dataDir = s.tempDir('ipam');
    host = new ServerHost(node);
    s.trackPid(host.child.pid);
    await host.ready();
  });
  after(async () => {
    await host?.stop();
    // A server killed by a failing test leaves its socket; this removes it while the namespace still exists.
    removeStaleCniSocket(netnsPath(node));
    await s.cleanup();
  });

  test('an ADD, CHECK and DEL made in its namespace are served, with the result a standalone call gives', async () => {
    const h = host!;
    const before0 = await h.metrics();
    const podA = await s.netns('a');
    const podB = await s.netns('b');
    const served = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-a', netns: netnsPath(podA), enter: 'nsenter' });
    assert.equal(served.code, 0, served.stdout + served.stderr);
    const afterServed = await h.metrics();
    assert.equal(calls(afterServed, 'ADD', 'ok') - calls(before0, 'ADD', 'ok'), 1, 'the agent served the ADD');

    const alone = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-b', netns: netnsPath(podB), enter: 'nsenter', env: { FLATNET_CNI_AGENT: 'off' } });
    assert.equal(alone.code, 0, alone.stdout + alone.stderr);
    assert.deepEqual(await h.metrics(), afterServed, 'FLATNET_CNI_AGENT=off: the plugin ran itself');

    // Same shape, field for field, but for the names and addresses that differ by pod.
    const a = served.json as { interfaces: { name: string }[]; ips: { address: string; gateway: string }[]; routes: unknown[] };
    const b = alone.json as typeof a;
    assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
    assert.deepEqual(a.interfaces.map((i) => i.name), ['fntap0', hostVethName('cid-a', 'eth0'), 'eth0']);
    assert.deepEqual(a.routes, b.routes);
    assert.equal(a.ips[0]?.gateway, '10.97.0.1');
    assert.notEqual(a.ips[0]?.address, b.ips[0]?.address);
    // The kernel agrees: the served pod is wired and reachable from its node and from the other pod.
    assert.ok(await canPing(node, a.ips[0].address.split('/')[0]!), 'node reaches the served pod');
    assert.ok(await canPing(podB, a.ips[0].address.split('/')[0]!), 'the standalone pod reaches the served one');

    const check = await callPlugin({ node, command: 'CHECK', config: { ...conf(dataDir), prevResult: served.json }, containerID: 'cid-a', netns: netnsPath(podA), enter: 'nsenter' });
    assert.equal(check.code, 0, check.stdout);
    for (const [cid, pod] of [['cid-a', podA], ['cid-b', podB]] as const) {
      const del = await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: cid, netns: netnsPath(pod), enter: 'nsenter' });
      assert.equal(del.code, 0, del.stdout);
    }
    const m = await h.metrics();
    assert.equal(calls(m, 'CHECK', 'ok'), 1);
    assert.equal(calls(m, 'DEL', 'ok'), 2);
    assert.deepEqual(reservations(dataDir), []);
    assert.deepEqual((await hostLinks(node)).filter((l) => l.startsWith('flv')), []);
  });

  test('libcni (a real runtime library) drives a conflist through the agent: ADD, CHECK, STATUS, GC, DEL', async () => {
    const confDir = s.tempDir('conf');
    // Debian's libcni (1.1.2, as in containerd 1.6/1.7 and podman 4) decodes results up to 1.0.0, and sends
    // STATUS and GC only for a 1.1.0 list (docs/runtimes.md): one list of each, as cni-libcni.test.ts does.
    const list = (version: string) => {
      const file = join(confDir, `agentpath-${version}.conflist`);
      writeFileSync(file, JSON.stringify({ cniVersion: version, name: 'fnt-agentpath', plugins: [{ type: 'flatnet', bridge: 'fntap0', ipam: { ranges: [[{ subnet: '10.97.0.0/24' }]], dataDir } }] }));
      return file;
    };
    const [list100, list110] = [list('1.0.0'), list('1.1.0')];
    const pod = await s.netns('lib');
    const common = { node, conflist: list100, enter: 'nsenter' as const, cacheDir: s.tempDir('cache') };
    const before0 = await host!.metrics();
    const add = await libcni('add', { ...common, containerID: 'cid-lib', netns: netnsPath(pod), ifname: 'eth0' });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const ip = (add.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    assert.ok(await canPing(node, ip));
    for (const [cmd, extra] of [
      ['check', { containerID: 'cid-lib', netns: netnsPath(pod), ifname: 'eth0' }],
      ['status', { conflist: list110 }],
      ['gc', { conflist: list110, validAttachments: [{ containerID: 'cid-lib', ifname: 'eth0' }] }],
    ] as const) {
      const r = await libcni(cmd, { ...common, ...extra });
      assert.equal(r.code, 0, `${cmd}: ${r.stdout}${r.stderr}`);
    }
    assert.equal(reservations(dataDir).length, 1, 'GC with the pod listed as valid keeps it');
    const del = await libcni('del', { ...common, containerID: 'cid-lib', netns: netnsPath(pod), ifname: 'eth0' });
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.deepEqual(reservations(dataDir), []);
    const m = await host!.metrics();
    for (const c of ['ADD', 'CHECK', 'STATUS', 'GC', 'DEL']) assert.ok(calls(m, c, 'ok') > calls(before0, c, 'ok'), `${c} served by the agent`);
    assert.equal(calls(m, undefined, 'declined'), 0, 'nothing declined');
  });

  test('FLATNET_CNI_DEBUG: a served ADD prints its phase timings on stderr, as a standalone one does', async () => {
    const runs = [
      { how: 'served', env: { FLATNET_CNI_DEBUG: '1' }, line: /^flatnet-cni ADD timing \(ms since the agent started serving the call\): parsed=([\d.]+)ms ipam=([\d.]+)ms links=([\d.]+)ms antispoof=([\d.]+)ms answered=([\d.]+)ms$/m },
      { how: 'standalone', env: { FLATNET_CNI_DEBUG: '1', FLATNET_CNI_AGENT: 'off' }, line: /^flatnet-cni ADD timing \(ms since process start\): main=([\d.]+)ms parsed=([\d.]+)ms ipam=([\d.]+)ms links=([\d.]+)ms antispoof=([\d.]+)ms answered=([\d.]+)ms$/m },
    ];
    for (const r of runs) {
      const pod = await s.netns(`dbg-${r.how}`);
      const add = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: `cid-dbg-${r.how}`, netns: netnsPath(pod), enter: 'nsenter', env: r.env });
      assert.equal(add.code, 0, add.stdout + add.stderr);
      const m = r.line.exec(add.stderr);
      assert.ok(m, `${r.how}: a timing line on stderr: ${JSON.stringify(add.stderr)}`);
      const t = m.slice(1).map(Number);
      assert.deepEqual([...t].sort((a, b) => a - b), t, `${r.how}: the phases in order`);
      assert.ok(JSON.parse(add.stdout), 'stdout holds the result alone');
      const del = await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: `cid-dbg-${r.how}`, netns: netnsPath(pod), enter: 'nsenter' });
      assert.equal(del.code, 0, del.stdout);
      assert.equal(del.stderr, '', 'without the variable, nothing on stderr');
    }
  });

  test('a failing call is served as the same CNI error', async () => {
    const pod = await s.netns('bad');
    const r = await callPlugin({ node, command: 'ADD', config: conf(dataDir, { mtu: 'big' }), containerID: 'cid-bad', netns: netnsPath(pod), enter: 'nsenter' });
    const alone = await callPlugin({ node, command: 'ADD', config: conf(dataDir, { mtu: 'big' }), containerID: 'cid-bad', netns: netnsPath(pod), enter: 'nsenter', env: { FLATNET_CNI_AGENT: 'off' } });
    assert.equal(r.code, 1);
    assert.deepEqual(r.json, alone.json);
    assert.equal(r.json?.['code'], 7);
    assert.match(String(r.json?.['msg']), /mtu/);
    assert.equal(calls(await host!.metrics(), 'ADD', 'error'), 1);
  });

  test('a call from another mount namespace, or with its own netlink setting, is declined and runs standalone', async () => {
    const pod = await s.netns('mnt');
    const before0 = await host!.metrics();
    // `ip netns exec` gives the call a mount namespace of its own.
    const r = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-mnt', netns: netnsPath(pod), enter: 'ip-netns-exec' });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = await host!.metrics();
    assert.equal(calls(m, 'ADD', 'declined') - calls(before0, 'ADD', 'declined'), 1);
    assert.equal(calls(m, 'ADD', 'ok'), calls(before0, 'ADD', 'ok'));
    const del = await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: 'cid-mnt', netns: netnsPath(pod) });
    assert.equal(del.code, 0, del.stdout);
    // FLATNET_NETLINK=off asks this call for the iproute2 path, which only the plugin's own process can honour.
    const d0 = calls(await host!.metrics(), 'VERSION', 'declined');
    const v = await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter', env: { FLATNET_NETLINK: 'off' } });
    assert.equal(v.code, 0, v.stdout);
    assert.equal(calls(await host!.metrics(), 'VERSION', 'declined'), d0 + 1);
  });

  test('garbage, an oversized frame and an unknown build are refused without harm', async () => {
    const h = host!;
    const mnt = readlinkSync('/proc/self/ns/mnt');
    assert.equal(await exchange(h.socket, frame(['NOPE', '0123456789abcdef', mnt, PLUGIN, 'CNI_COMMAND=ADD'])), 'N');
    assert.equal(await exchange(h.socket, frame(['FNC1', 'not-a-build-id', mnt, PLUGIN])), 'N');
    assert.equal(await exchange(h.socket, frame(['FNC1', '0123456789abcdef', mnt, PLUGIN, 'CNI_COMMAND=VERSION'])), 'N', 'the plugin file holds another build');
    const huge = Buffer.alloc(4);
    huge.writeUInt32LE(64 * 1024 * 1024);
    assert.equal(await exchange(h.socket, huge), '', 'an oversized frame is dropped unanswered');
    // Still serving.
    const v = await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter' });
    assert.equal(v.code, 0, v.stdout);
    assert.equal(calls(await h.metrics(), 'VERSION', 'ok'), 1);
  });

  test('a build whose modules cannot be evaluated is declined before the yes, so the plugin runs the call itself', async () => {
    // After a yes the launcher can only answer "try again", and a runtime retrying would meet the same
    // failure on every call; a decline costs nothing. Two plugin files with the right layout and matching
    // build ids: one whose bundle throws while its modules are evaluated, one without serve().
    const h = host!;
    const mnt = readlinkSync('/proc/self/ns/mnt');
    const dir = s.tempDir('badbuild');
    const declined0 = calls(await h.metrics(), 'VERSION', 'declined');
    const bundles = {
      throws: '(function (exports, require, module) { throw new Error("broken build"); })',
      'no-serve': '(function (exports, require, module) { module.exports = { main() {} }; })',
    };
    for (const [name, bundle] of Object.entries(bundles)) {
      const file = join(dir, name);
      const head = Buffer.from('\x7fELF not a launcher\n', 'latin1');
      writeFileSync(file, Buffer.concat([head, Buffer.from(bundle, 'latin1'), Buffer.from(String(head.length).padStart(10, '0'))]));
      const id = buildIdOf(bundle);
      assert.equal(await exchange(h.socket, frame(['FNC1', id, mnt, file, 'CNI_COMMAND=VERSION'])), 'N', `${name}: declined`);
      // Asked again: still a decline (a build that failed is not kept as if it had loaded).
      assert.equal(await exchange(h.socket, frame(['FNC1', id, mnt, file, 'CNI_COMMAND=VERSION'])), 'N', `${name}: declined again`);
    }
    assert.equal(calls(await h.metrics(), 'VERSION', 'declined'), declined0 + 4);
    // And the real plugin is still served.
    const v = await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter' });
    assert.equal(v.code, 0, v.stdout);
    assert.equal(calls(await h.metrics(), 'VERSION', 'declined'), declined0 + 4, 'the real plugin was not declined');
  });

  test('a wedged agent (SIGSTOP) holds a call for 2 s, then the plugin runs it itself; nothing is done twice', async () => {
    const h = host!;
    const pod = await s.netns('wedged');
    const before0 = await h.metrics();
    h.child.kill('SIGSTOP');
    let r;
    try {
      const t0 = Date.now();
      r = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-wedged', netns: netnsPath(pod), enter: 'nsenter' });
      assert.ok(Date.now() - t0 >= 1900, `the launcher waited for the agent first (${Date.now() - t0} ms)`);
    } finally {
      h.child.kill('SIGCONT');
    }
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const ip = (r.json as { ips: { address: string }[] }).ips[0]!.address;
    // The agent, woken, finds the abandoned connection: it must not act on it.
    const v = await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter' });
    assert.equal(v.code, 0);
    const m = await h.metrics();
    assert.equal(calls(m, 'ADD', 'ok'), calls(before0, 'ADD', 'ok'), 'the agent did not serve the ADD the plugin ran itself');
    const links = JSON.parse(await inNs(pod, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'eth0'])) as { addr_info: { local: string; prefixlen: number }[] }[];
    assert.deepEqual(links.flatMap((l) => l.addr_info.map((x) => `${x.local}/${x.prefixlen}`)), [ip], 'the pod holds the one address of the ADD');
    assert.equal(reservations(dataDir).length, 1);
    const del = await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: 'cid-wedged', netns: netnsPath(pod), enter: 'nsenter' });
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(reservations(dataDir), []);
  });

  test("a wedged agent whose backlog is full holds a call for 2 s at connect, then the plugin runs itself", async () => {
    const h = host!;
    h.child.kill('SIGSTOP');
    const filler: Socket[] = [];
    try {
      // Fill the listener's backlog (Node's default is 511 pending connections): a connect made by the
      // launcher (blocking) then waits in the kernel until its send timeout.
      for (let i = 0; i < 600; i++) {
        const c = connect(h.socket);
        c.on('error', () => undefined); // EAGAIN once the backlog is full: that is the point
        filler.push(c);
      }
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      const v = await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter' });
      const ms = Date.now() - t0;
      assert.equal(v.code, 0, v.stdout + v.stderr);
      assert.ok(ms >= 1900 && ms < 10_000, `the launcher gave the agent 2 s, then ran itself (${ms} ms)`);
    } finally {
      for (const c of filler) c.destroy();
      h.child.kill('SIGCONT');
    }
    // Still serving once it runs again.
    await waitFor('the agent to serve again', 10_000, async () => (await callPlugin({ node, command: 'VERSION', config: { cniVersion: '1.1.0' }, enter: 'nsenter' })).code === 0);
  });

  test('20 concurrent ADDs are served with distinct addresses, and their DELs leave nothing', async () => {
    const pods = await Promise.all(Array.from({ length: 20 }, (_, i) => s.netns(`c${i}`)));
    const before0 = await host!.metrics();
    const adds = await Promise.all(pods.map((p, i) => callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: `cid-c${i}`, netns: netnsPath(p), enter: 'nsenter' })));
    for (const r of adds) assert.equal(r.code, 0, r.stdout + r.stderr);
    const ips = adds.map((r) => (r.json as { ips: { address: string }[] }).ips[0]!.address);
    assert.equal(new Set(ips).size, 20);
    assert.equal(calls(await host!.metrics(), 'ADD', 'ok') - calls(before0, 'ADD', 'ok'), 20);
    assert.equal(reservations(dataDir).length, 20);
    const dels = await Promise.all(pods.map((p, i) => callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: `cid-c${i}`, netns: netnsPath(p), enter: 'nsenter' })));
    for (const r of dels) assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(reservations(dataDir), []);
    assert.deepEqual((await hostLinks(node)).filter((l) => l.startsWith('flv')), []);
  });

  test('an ADD whose caller is killed before the answer is undone by the agent', async () => {
    const dir = s.tempDir('slow');
    // The IPAM's sleep is the window to kill the caller in; a loaded machine must still land inside it.
    const ipam = slowIpam(dir, 3);
    const pod = await s.netns('gone');
    const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'cid-gone', CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0', CNI_PATH: ipam.cniPath };
    const caller = spawn('nsenter', [`--net=${netnsPath(node)}`, '--', PLUGIN], { env, stdio: ['pipe', 'ignore', 'ignore'] });
    caller.stdin.end(JSON.stringify(conf(dataDir, { ipam: { type: 'fnt-slow-ipam' } })));
    await waitFor('the delegated IPAM to be called through the agent', 10_000, () => existsSync(ipam.started));
    caller.kill('SIGKILL');
    // The agent finishes the ADD, finds nobody to answer and runs the DEL: the IPAM sees it.
    await waitFor('the agent to undo the ADD', 10_000, () => existsSync(ipam.log) && readFileSync(ipam.log, 'utf8').split('\n').includes('DEL'));
    await waitFor('the host veth to go', 5_000, async () => !(await hostLinks(node)).includes(hostVethName('cid-gone', 'eth0')));
    assert.deepEqual(readFileSync(ipam.log, 'utf8').trim().split('\n'), ['ADD', 'DEL']);
  });

  test('an agent killed mid-call answers "try again", and later calls run standalone', async () => {
    const dir = s.tempDir('slow');
    const ipam = slowIpam(dir, 30);
    const pod = await s.netns('killed');
    const call = callPlugin({ node, command: 'ADD', config: conf(dataDir, { ipam: { type: 'fnt-slow-ipam' } }), containerID: 'cid-killed', netns: netnsPath(pod), enter: 'nsenter', env: { CNI_PATH: ipam.cniPath } });
    await waitFor('the delegated IPAM to be called through the agent', 10_000, () => existsSync(ipam.started));
    host!.child.kill('SIGKILL');
    const r = await call;
    assert.equal(r.code, 1);
    assert.equal(r.json?.['code'], 11, r.stdout);
    assert.match(String(r.json?.['msg']), /try again/);
    // The socket is left behind, but nobody listens: the next calls start Node themselves.
    assert.ok(existsSync(host!.socket));
    const del = await callPlugin({ node, command: 'DEL', config: conf(dataDir, { ipam: { type: 'fnt-slow-ipam' } }), containerID: 'cid-killed', netns: netnsPath(pod), enter: 'nsenter', env: { CNI_PATH: ipam.cniPath } });
    assert.equal(del.code, 0, del.stdout);
    const pod2 = await s.netns('after');
    const add = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-after', netns: netnsPath(pod2), enter: 'nsenter' });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const del2 = await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: 'cid-after', netns: netnsPath(pod2), enter: 'nsenter' });
    assert.equal(del2.code, 0);
    // A new server takes the namespace over from the dead one's socket.
    host = new ServerHost(node);
    s.trackPid(host.child.pid);
    await host.ready();
    const pod3 = await s.netns('again');
    const served = await callPlugin({ node, command: 'ADD', config: conf(dataDir), containerID: 'cid-again', netns: netnsPath(pod3), enter: 'nsenter' });
    assert.equal(served.code, 0, served.stdout);
    assert.equal(calls(await host.metrics(), 'ADD', 'ok'), 1);
    assert.equal((await callPlugin({ node, command: 'DEL', config: conf(dataDir), containerID: 'cid-again', netns: netnsPath(pod3), enter: 'nsenter' })).code, 0);
  });

  test('an agent killed mid-DEL: the plugin runs the DEL itself on the same input, and it succeeds', async () => {
    // Every verb but ADD is safe to run twice, so the launcher keeps a copy of its stdin and, when the
    // agent ends before answering, starts Node on it instead of answering "try again".
    const dir = s.tempDir('slowdel');
    const ipam = slowIpam(dir, 30, 'DEL');
    const delegated = conf(dataDir, { ipam: { type: 'fnt-slow-ipam' } });
    const pod = await s.netns('deldying');
    const env = { CNI_PATH: ipam.cniPath };
    const served0 = calls(await host!.metrics(), 'ADD', 'ok');
    const add = await callPlugin({ node, command: 'ADD', config: delegated, containerID: 'cid-deldying', netns: netnsPath(pod), enter: 'nsenter', env });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.equal(calls(await host!.metrics(), 'ADD', 'ok'), served0 + 1, 'the ADD was served');
    const veth = hostVethName('cid-deldying', 'eth0');
    assert.ok((await hostLinks(node)).includes(veth));
    // DEL with prevResult, as libcni sends it: the copy must carry the whole config.
    const del = callPlugin({ node, command: 'DEL', config: { ...delegated, prevResult: add.json }, containerID: 'cid-deldying', netns: netnsPath(pod), enter: 'nsenter', env });
    await waitFor('the delegated IPAM DEL to be called through the agent', 10_000, () => existsSync(ipam.started));
    host!.child.kill('SIGKILL');
    const r = await del;
    assert.equal(r.code, 0, `the DEL succeeded: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '', 'a DEL prints nothing');
    // The agent's DEL reached the IPAM, and so did the plugin's own, with the same input.
    assert.deepEqual(readFileSync(ipam.log, 'utf8').trim().split('\n'), ['ADD', 'DEL', 'DEL']);
    assert.ok(!(await hostLinks(node)).includes(veth), 'the host veth is gone');
    // A new server, for what follows.
    host = new ServerHost(node);
    s.trackPid(host.child.pid);
    await host.ready();
  });
});
