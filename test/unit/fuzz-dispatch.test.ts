// Property-based fuzzing of the plugin's protocol edge, in process: dispatch() with the real verb handlers,
// fed env vars, CNI_ARGS and stdin configs that must be refused. The tripwire (test/tools/fuzz-guard.ts)
// turns "refused before any kernel or disk work" into an assertion. Valid inputs are never handed to the
// handlers here (they would touch the kernel); the root suite test/integration/fault-plugin-fuzz.test.ts runs
// both kinds through the real executable. Reproduce a failure with FLATNET_FUZZ_SEED=<seed in the test name>.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { type Handlers, dispatch } from '../../src/cni/dispatch.ts';
import { validateContainerID, validateInterfaceName, validateNetworkName } from '../../src/cni/identifiers.ts';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.ts';
import { parseNetConf } from '../../src/plugin/config.ts';
import { cmdAdd } from '../../src/plugin/add.ts';
import { cmdCheck } from '../../src/plugin/check.ts';
import { cmdDel } from '../../src/plugin/del.ts';
import { cmdGc } from '../../src/plugin/gc.ts';
import { cmdStatus } from '../../src/plugin/status.ts';
import { run } from '../../src/linux/run.ts';
import { DiskStore } from '../../src/ipam/disk-store.ts';
import {
  type Case, type Env, FUZZ_SEED, HOSTILE_FRAGMENTS, VERBS, arbBase, arbCase, assertRefused, buildCase, hostileString,
} from '../tools/fuzz.ts';
import { Tripwire } from '../tools/fuzz-guard.ts';

const handlers: Handlers = { add: cmdAdd, del: cmdDel, check: cmdCheck, status: cmdStatus, gc: cmdGc };
// Paths that must never be touched: the tripwire throws before any fs write, so these only name things.
const opts = { dataDir: '/nonexistent/fnt-fuzz-data', netns: '/run/netns/fnt-fuzz-nonexistent', cniPath: '/nonexistent/fnt-fuzz-cni' };
const wire = new Tripwire();

async function runCase(c: Case): Promise<void> {
  const out = await dispatch(c.env, () => c.stdin, handlers);
  const hits = wire.take();
  assert.deepEqual(hits, [], `${c.label}: reached the kernel or the disk before refusing: ${hits.join(', ')}\n  env=${JSON.stringify(c.env).slice(0, 300)}\n  stdin=${c.stdin.toString('utf8').slice(0, 300)}`);
  assertRefused(c, out);
}

describe(`plugin fuzzer, in process (seed ${FUZZ_SEED})`, () => {
  before(() => wire.arm());
  after(() => wire.disarm());

  test('the tripwire is armed: spawning a program or writing the IPAM store throws and is recorded', async () => {
    await assert.rejects(run(['true']), /tripwire: child_process\.spawn/);
    assert.throws(() => new DiskStore('/nonexistent/fnt-fuzz-data', 'n').ensureDir(), /cannot create IPAM directory/);
    assert.equal(wire.take().length, 2);
  });

  test(`generated bases are valid, so each refusal below is caused by its defect (seed ${FUZZ_SEED}, 1000 cases)`, () => {
    fc.assert(
      fc.property(fc.oneof(...VERBS.map((v) => arbBase(v, opts).map((b) => [v, b] as const))), ([verb, b]) => {
        const conf = parseNetConf(b.conf, b.conf['cniVersion'] as string);
        assert.equal(conf.name, b.conf['name']);
        if (verb === 'ADD' || verb === 'DEL' || verb === 'CHECK') {
          validateContainerID(b.env['CNI_CONTAINERID'] ?? '');
          validateInterfaceName(b.env['CNI_IFNAME'] ?? '');
        }
        validateNetworkName(conf.name);
      }),
      { seed: FUZZ_SEED, numRuns: 1000 },
    );
  });

  test(`one defect: refused early, right code, message names the variable or field (seed ${FUZZ_SEED}, 5000 cases)`, async () => {
    await fc.assert(fc.asyncProperty(arbCase(opts, false), runCase), { seed: FUZZ_SEED, numRuns: 5000 });
  });

  test(`one to three defects: refused early with a well-formed error (seed ${FUZZ_SEED + 1}, 3000 cases)`, async () => {
    await fc.assert(fc.asyncProperty(arbCase(opts, true), runCase), { seed: FUZZ_SEED + 1, numRuns: 3000 });
  });

  test(`raw junk: random env values and random stdin bytes or JSON (seed ${FUZZ_SEED + 2}, 3000 cases)`, async () => {
    const envValue = fc.option(fc.oneof(hostileString, fc.string({ maxLength: 20 }), fc.constantFrom('eth0', 'abc123', '/run/netns/x', '/opt/cni/bin')), { nil: undefined });
    const arbEnv = fc.record({
      CNI_COMMAND: fc.oneof(fc.constantFrom('ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'), hostileString),
      CNI_CONTAINERID: envValue, CNI_NETNS: envValue, CNI_IFNAME: envValue, CNI_ARGS: envValue, CNI_PATH: envValue,
    }, { requiredKeys: ['CNI_COMMAND'] });
    const arbStdin = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc.json({ maxDepth: 4 }).map((s) => Buffer.from(s)),
      fc.record({ cniVersion: fc.constantFrom(...SUPPORTED_VERSIONS), name: fc.string(), extra: fc.jsonValue() }, { requiredKeys: [] }).map((o) => Buffer.from(JSON.stringify(o))),
    );
    await fc.assert(
      fc.asyncProperty(arbEnv, arbStdin, async (env: Env, stdin: Buffer) => {
        const out = await dispatch(env, () => stdin, handlers);
        assert.deepEqual(wire.take(), [], `junk reached the kernel: env=${JSON.stringify(env)} stdin=${stdin.toString('hex').slice(0, 200)}`);
        if (env['CNI_COMMAND'] === 'VERSION') {
          // VERSION ignores stdin: always a version answer, whatever came in.
          assert.equal(out.exitCode, 0);
          const v = JSON.parse(out.stdout) as { cniVersion: string; supportedVersions: string[] };
          assert.deepEqual(v.supportedVersions, [...SUPPORTED_VERSIONS]);
          return;
        }
        assertRefused({ label: 'raw junk', env }, out);
      }),
      { seed: FUZZ_SEED + 2, numRuns: 3000 },
    );
  });

  test('a stdin read error is code 5, not a crash', async () => {
    const out = await dispatch({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'a', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' }, () => {
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    }, handlers);
    assertRefused({ label: 'stdin EIO', env: {}, codes: [5] }, out);
  });
});

describe('hostile identifiers, in process', () => {
  before(() => wire.arm());
  after(() => wire.disarm());
  const b = { env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_NETNS: opts.netns, CNI_IFNAME: 'eth0', CNI_ARGS: '', CNI_PATH: opts.cniPath }, conf: { cniVersion: '1.1.0', name: 'net', type: 'flatnet', ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: opts.dataDir } } };
  const values = [
    ...HOSTILE_FRAGMENTS.map((f) => `x${f}y`), 'a;reboot', 'x$(touch /tmp/fnt-pwned)', 'x`touch /tmp/fnt-pwned`', 'a|b', 'a&b', 'a\nb', '../../etc/passwd',
    'x'.repeat(10_240), 'a\0b', 'a\uFFFDb', 'a\uD800b', '\u0430bc' /* Cyrillic a */,
  ];
  const edits: [string, (v: string) => { env?: Env; conf?: Record<string, unknown> }, RegExp, number, (v: string) => boolean][] = [
    ['CNI_CONTAINERID', (v) => ({ env: { CNI_CONTAINERID: v } }), /CNI_CONTAINERID/, 4, (v) => !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(v) || v.length > 200],
    ['CNI_IFNAME', (v) => ({ env: { CNI_IFNAME: v } }), /CNI_IFNAME/, 4, (v) => Buffer.byteLength(v) > 15 || /[/:\s\0-\x1f\x7f#"'\uFFFD]/u.test(v) || v === '..'],
    ['name', (v) => ({ conf: { name: v } }), /name/, 7, (v) => !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(v) || v.length > 253],
    ['ipam.dataDir', (v) => ({ conf: { ipam: { ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: `/var/lib/${v}` } } }), /dataDir/, 7, (v) => `/var/lib/${v}`.split('/').includes('..') || /[\0-\x1f\x7f]/u.test(v) || v.length > 1000],
  ];
  for (const [what, edit, mention, code, mustRefuse] of edits) {
    test(`${what}: shell syntax, traversal, 10 kB, NUL, non-UTF-8 and lookalikes are refused with code ${code}`, async () => {
      let refused = 0;
      for (const v of values) {
        if (!mustRefuse(v)) continue;
        const e = edit(v);
        const c = buildCase('ADD', { env: { ...b.env, ...e.env }, conf: { ...b.conf, ...e.conf } }, []);
        await runCase({ ...c, label: `${what}=${JSON.stringify(v.slice(0, 40))}`, codes: [code], mention });
        refused++;
      }
      assert.ok(refused >= 5, `only ${refused} hostile values were refusable`);
    });
  }
  test('non-UTF-8 bytes on stdin: a name with 0xff refused (7), broken JSON refused (6)', async () => {
    const bytes = Buffer.concat([Buffer.from('{"cniVersion":"1.1.0","name":"a'), Buffer.from([0xff, 0xfe]), Buffer.from(`","type":"flatnet","ipam":{"ranges":[[{"subnet":"10.99.0.0/24"}]],"dataDir":"${opts.dataDir}"}}`)]);
    await runCase({ label: 'name with 0xff 0xfe', env: b.env, stdin: bytes, codes: [7], mention: /name/ });
    await runCase({ label: 'stdin bytes c0 80', env: b.env, stdin: Buffer.from([0x7b, 0xc0, 0x80, 0x7d]), codes: [6] });
  });
});

test('no shell anywhere: src never uses shell: true, exec() or execSync(); the plugin spawns only via run.ts', () => {
  const root = resolve(import.meta.dirname, '../../src');
  const files: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.ts')) files.push(p);
    }
  };
  walk(root);
  assert.ok(files.length > 20, 'found the source tree');
  const offenders: string[] = [];
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    text.split('\n').forEach((line, i) => {
      // RegExp.prototype.exec ("re.exec(") is not a process; a bare or imported exec()/execSync() is.
      if (/shell\s*:\s*(true|['"`])/.test(line) || /(^|[^.\w])exec(Sync)?\s*\(/.test(line) || /\bexecSync\b/.test(line) || /import\s*{[^}]*\bexec(Sync)?\b[^}]*}\s*from\s*['"](node:)?child_process/.test(line)) {
        offenders.push(`${f.slice(root.length + 1)}:${i + 1}: ${line.trim()}`);
      }
    });
    // What the plugin executable is built from (cni, plugin, ipam, net, linux) reaches programs only via run.ts.
    const rel = f.slice(root.length + 1);
    if (/^(cni|plugin|ipam|net|linux)\//.test(rel) && rel !== 'linux/run.ts' && /from\s*['"](node:)?child_process['"]/.test(text)) offenders.push(`${rel}: imports child_process`);
  }
  assert.deepEqual(offenders, []);
});
