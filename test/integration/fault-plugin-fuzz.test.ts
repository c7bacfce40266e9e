// The fuzzer through the real executable (root): inside a throwaway node namespace with a real pod namespace
// and a real data directory. Refused inputs must leave nothing behind (no host veth, no pod interface, not a
// single file in the data directory); inputs that fail late (after the plugin started creating things) must
// roll back completely; hostile-but-legal values must be used literally (no shell ever sees them).
// Reproduce with FLATNET_FUZZ_SEED=<seed in the test name>.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import fc from 'fast-check';
import { hostVethName } from '../../src/plugin/names.ts';
import { run, runOk } from '../../src/linux/run.ts';
import { Scratch } from '../tools/netns.ts';
import { CNI_PATH, netnsPath } from '../tools/cni.ts';
import { FUZZ_SEED, HOSTILE_BUT_LEGAL_IFNAMES, arbCase, assertRefused, validContainerID } from '../tools/fuzz.ts';
import { execPlugin, execPluginBytes, linkNames, pluginEnv, storeFiles, storeState, waitForNoProcesses } from '../tools/fuzz-exec.ts';

describe(`plugin fuzzer through the executable (seed ${FUZZ_SEED})`, () => {
  const s = new Scratch();
  let node = '';
  let pod = '';
  let busy = '';
  let dataDir = '';
  let tmp = '';
  before(async () => {
    node = await s.netns('node');
    pod = await s.netns('pod');
    busy = await s.netns('busy');
    dataDir = s.tempDir('ipam');
    tmp = s.tempDir('tmp');
    // A pod that already has eth0, and a node link named like a bridge that is not one: late failures.
    await runOk(['ip', '-n', busy, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    await runOk(['ip', '-n', node, 'link', 'add', 'fldummy0', 'type', 'veth', 'peer', 'name', 'fldummy1']);
  });
  after(() => s.cleanup());

  /**
   * Nothing of any attachment exists: no host veth, nothing but lo in the pod, the busy pod untouched, no
   * reservation or temp file anywhere in dataDir. `before` (a snapshot of dataDir) is for inputs refused before
   * any work: then dataDir must be exactly as it was. (A late failure may leave the network's directory and
   * host-local's round-robin cursor last_reserved_ip.N, which are not reservations.)
   */
  async function assertNothingLeft(label: string, before?: readonly string[]): Promise<void> {
    const nodeLinks = (await linkNames(node)).filter((n) => n.startsWith('flv'));
    assert.deepEqual(nodeLinks, [], `${label}: host veth left behind`);
    assert.deepEqual(await linkNames(pod), ['lo'], `${label}: interface left in the pod`);
    assert.deepEqual((await linkNames(busy)).sort(), ['eth0', 'eth0p', 'lo'], `${label}: busy pod changed`);
    const files = storeFiles(dataDir);
    assert.deepEqual(files.filter((f) => !f.endsWith('/') && !/(^|\/)last_reserved_ip\.\d+$/.test(f)), [], `${label}: reservation or temp file left`);
    if (before) assert.deepEqual(files, before, `${label}: the data directory was touched`);
  }

  test(`150 invalid inputs: refused, one well-formed error each, nothing created (seed ${FUZZ_SEED})`, { timeout: 600_000 }, async (t) => {
    let n = 0;
    const t0 = performance.now();
    const arb = arbCase({ dataDir, netns: netnsPath(pod), cniPath: CNI_PATH }, false)
      // exec cannot carry NUL in env (Node's spawn refuses it, see the hostile-identifier test below).
      .filter((c) => Object.values(c.env).every((v) => v === undefined || !v.includes('\0')));
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        const before = storeFiles(dataDir);
        // Exactly the case's variables: a variable the case removed must not come back as a default.
        const r = await execPlugin(node, pluginEnv({ CNI_PATH: undefined, ...c.env }), c.stdin.toString('utf8'));
        assertRefused(c, { stdout: r.stdout, exitCode: r.code });
        await assertNothingLeft(c.label, before);
        n++;
      }),
      { seed: FUZZ_SEED, numRuns: 150, endOnFailure: true },
    );
    t.diagnostic(`${n} cases in ${Math.round((performance.now() - t0) / 1000)} s`);
  });

  test(`late failures roll back completely; hostile-but-legal names are used literally (seed ${FUZZ_SEED + 3}, 50 cases)`, { timeout: 600_000 }, async (t) => {
    const t0 = performance.now();
    const kinds = ['ip-outside', 'ip-gateway', 'ifname-exists', 'not-a-bridge', 'no-netns', 'legal-hostile'] as const;
    const arb = fc.record({
      kind: fc.constantFrom(...kinds),
      cid: validContainerID.map((id) => `fz-${id}`),
      version: fc.constantFrom('0.3.1', '0.4.0', '1.0.0', '1.1.0'),
      ifname: fc.constantFrom(...HOSTILE_BUT_LEGAL_IFNAMES),
      dirSuffix: fc.constantFrom('x;$(touch PWNED)', 'a`touch PWNED`b', 'sp|ace&', "q'uote\"d", 'dollar$HOME'),
    });
    const counts: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        counts[c.kind] = (counts[c.kind] ?? 0) + 1;
        const conf: Record<string, unknown> = { cniVersion: c.version, name: 'fnt-fuzz', type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.20.0/24' }]], dataDir } };
        const env: Record<string, string> = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: c.cid, CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0', CNI_ARGS: '' };
        let expect: number | undefined;
        switch (c.kind) {
          case 'ip-outside': env['CNI_ARGS'] = 'IgnoreUnknown=1;IP=10.99.21.5'; expect = 100; break;
          case 'ip-gateway': env['CNI_ARGS'] = 'IP=10.99.20.1'; expect = 100; break;
          case 'ifname-exists': env['CNI_NETNS'] = netnsPath(busy); expect = 102; break;
          case 'not-a-bridge': conf['bridge'] = 'fldummy0'; expect = 7; break;
          case 'no-netns': env['CNI_NETNS'] = '/run/netns/fnt-does-not-exist'; expect = 4; break;
          case 'legal-hostile': env['CNI_IFNAME'] = c.ifname; conf['ipam'] = { ranges: [[{ subnet: '10.99.20.0/24' }]], dataDir: `${dataDir}/${c.dirSuffix}` }; break;
        }
        const r = await execPlugin(node, pluginEnv(env), JSON.stringify(conf));
        await waitForNoProcesses(`CNI_CONTAINERID=${c.cid}`);
        if (expect !== undefined) {
          assertRefused({ label: c.kind, env, codes: [expect] }, { stdout: r.stdout, exitCode: r.code });
        } else {
          assert.equal(r.code, 0, `${c.kind} ${c.ifname}: ${r.stdout}${r.stderr}`);
          // Literally: the pod interface has exactly the requested name, the reservation sits in exactly the
          // requested directory, and nothing a shell would have run happened.
          assert.deepEqual((await linkNames(pod)).sort(), ['lo', c.ifname].sort());
          assert.ok((await linkNames(node)).includes(hostVethName(c.cid, c.ifname)));
          assert.equal(storeState(`${dataDir}/${c.dirSuffix}`, 'fnt-fuzz').reservations.size, 1);
          const del = await execPlugin(node, pluginEnv({ ...env, CNI_COMMAND: 'DEL' }), JSON.stringify(conf));
          assert.equal(del.code, 0, del.stdout);
          await waitForNoProcesses(`CNI_CONTAINERID=${c.cid}`);
          assert.ok(!existsSync('PWNED') && !existsSync(`${dataDir}/PWNED`), 'a shell ran');
        }
        await assertNothingLeft(`${c.kind} ${c.cid}`);
      }),
      { seed: FUZZ_SEED + 3, numRuns: 50, endOnFailure: true },
    );
    t.diagnostic(`${JSON.stringify(counts)} in ${Math.round((performance.now() - t0) / 1000)} s`);
  });

  describe('hostile identifiers through the executable', () => {
    const conf = () => ({ cniVersion: '1.1.0', name: 'fnt-fuzz', type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.20.0/24' }]], dataDir } });
    const base = () => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'ok-id', CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0' });
    const table: [string, () => { env?: Record<string, string>; conf?: Record<string, unknown> }, number, RegExp][] = [];
    for (const v of ['a;reboot', 'x$(touch PWNED)', 'x`touch PWNED`', 'a|b', 'a&b', 'a\nb', '../../etc', 'x'.repeat(10_240), 'a'.repeat(250)]) {
      table.push([`CNI_CONTAINERID=${JSON.stringify(v.slice(0, 20))}`, () => ({ env: { CNI_CONTAINERID: v } }), 4, /CNI_CONTAINERID/]);
      // (250 letters is a valid network name: the spec bounds only the characters.)
      if (v !== 'a'.repeat(250)) table.push([`name=${JSON.stringify(v.slice(0, 20))}`, () => ({ conf: { name: v } }), 7, /name/]);
    }
    for (const v of ['e#0', '"x"', "'x'", 'a\nb', 'a b', '../x', 'x'.repeat(10_240), 'e\uFFFDth0', 'a:b']) {
      table.push([`CNI_IFNAME=${JSON.stringify(v.slice(0, 20))}`, () => ({ env: { CNI_IFNAME: v } }), 4, /CNI_IFNAME/]);
    }
    for (const v of ['relative', '/var/lib/../../etc', '/tmp/a\nb', `/${'d'.repeat(10_240)}`]) {
      table.push([`dataDir=${JSON.stringify(v.slice(0, 20))}`, () => ({ conf: { ipam: { ranges: [[{ subnet: '10.99.20.0/24' }]], dataDir: v } } }), 7, /dataDir/]);
    }
    for (const [label, edit, code, mention] of table) {
      test(`${label}: refused with ${code}, nothing created`, async () => {
        const e = edit();
        const env = { ...base(), ...e.env };
        const before = storeFiles(dataDir);
        const r = await execPlugin(node, pluginEnv(env), JSON.stringify({ ...conf(), ...e.conf }));
        assertRefused({ label, env, codes: [code], mention }, { stdout: r.stdout, exitCode: r.code });
        await assertNothingLeft(label, before);
        assert.ok(!existsSync('PWNED'));
      });
    }

    test('raw bytes that are not UTF-8 (via exec, byte for byte) in CNI_CONTAINERID, CNI_IFNAME and the config', async () => {
      const envBytes = (over: Record<string, Buffer>) => ({
        PATH: Buffer.from(process.env['PATH'] ?? '/usr/bin:/bin'), CNI_PATH: Buffer.from(CNI_PATH),
        CNI_COMMAND: Buffer.from('ADD'), CNI_CONTAINERID: Buffer.from('ok-id'), CNI_NETNS: Buffer.from(netnsPath(pod)), CNI_IFNAME: Buffer.from('eth0'), ...over,
      });
      const good = Buffer.from(JSON.stringify(conf()));
      const cases: [string, Record<string, Buffer>, Buffer, number, RegExp | undefined][] = [
        ['CNI_CONTAINERID ff fe', { CNI_CONTAINERID: Buffer.from([0x61, 0xff, 0xfe]) }, good, 4, /CNI_CONTAINERID/],
        ['CNI_IFNAME e ff th0', { CNI_IFNAME: Buffer.from([0x65, 0xff, 0x74, 0x68, 0x30]) }, good, 4, /CNI_IFNAME/],
        ['CNI_IFNAME overlong NUL c0 80', { CNI_IFNAME: Buffer.from([0x65, 0xc0, 0x80]) }, good, 4, /CNI_IFNAME/],
        ['CNI_NETNS with ff', { CNI_NETNS: Buffer.from([0x2f, 0x72, 0x75, 0x6e, 0xff]) }, good, 4, /CNI_NETNS/],
        ['network name with ff', {}, Buffer.concat([Buffer.from('{"cniVersion":"1.1.0","type":"flatnet","name":"n'), Buffer.from([0xff]), Buffer.from('"}')]), 7, /name/],
        ['stdin: raw NUL inside JSON', {}, Buffer.concat([Buffer.from('{"cniVersion":"1.1.0","name":"n'), Buffer.from([0]), Buffer.from('x"}')]), 6, undefined],
        ['stdin: escaped NUL in the name', {}, Buffer.from('{"cniVersion":"1.1.0","type":"flatnet","name":"n\\u0000x"}'), 7, /name/],
        ['stdin: UTF-16 with BOM', {}, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(JSON.stringify(conf()), 'utf16le')]), 6, undefined],
      ];
      for (const [label, env, stdin, code, mention] of cases) {
        const before = storeFiles(dataDir);
        const r = await execPluginBytes(node, envBytes(env), stdin, tmp);
        assertRefused({ label, env: { CNI_COMMAND: 'ADD' }, codes: [code], ...(mention ? { mention } : {}) }, { stdout: r.stdout, exitCode: r.code });
        await assertNothingLeft(label, before);
      }
    });

    test('NUL cannot reach the plugin through the environment: Node refuses to spawn with it (so the in-process fuzzer covers it)', async () => {
      await assert.rejects(run(['true'], { env: { CNI_CONTAINERID: 'a\0b' } }), /null bytes|ERR_INVALID_ARG_VALUE/);
    });
  });
});
