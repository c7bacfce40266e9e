// EmbeddedStore against a real directory, with real processes racing and being SIGKILLed.
// This file is also its own child process: with FLATNET_STORE_CHILD set it runs one racer
// instead of registering tests.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { overlaps, parsePrefix } from '../../src/net/ip.ts';
import { run } from '../../src/linux/run.ts';
import { EmbeddedStore } from '../../src/store/embedded.ts';
import { LeaseLostError, LeaseRequestError } from '../../src/store/types.ts';
import type { AcquireRequest, ClusterNetwork, NodeLease } from '../../src/store/types.ts';

const network: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16', 'fd10:244::/56'], nodePrefixLength: { 4: 24, 6: 64 } };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function req(node: string, i: number, ttlMs = 60_000): AcquireRequest {
  return { node, network, ttlMs, underlayIPs: [`192.168.${i >> 8}.${i & 255}`], backend: 'host-gw' };
}

async function runChild(mode: string): Promise<void> {
  const dir = process.env.STORE_DIR ?? '';
  const store = new EmbeddedStore({ dir, reuseGraceMs: 1_000 });
  if (mode === 'race') {
    const node = process.env.NODE_NAME ?? '';
    await writeFile(join(process.env.READY_DIR ?? '', node), '');
    while (!existsSync(process.env.GO_FILE ?? '')) await sleep(2);
    const lease = await store.acquire(req(node, Number(process.env.NODE_INDEX)));
    process.stdout.write(JSON.stringify(lease) + '\n');
  } else {
    // churn: acquire one node after another until killed
    for (let i = 0; ; i++) {
      const lease = await store.acquire(req(`${process.env.NODE_PREFIX}-${i}`, Number(process.env.NODE_INDEX) + i));
      process.stdout.write(JSON.stringify(lease) + '\n');
    }
  }
}

function assertDisjoint(leases: readonly NodeLease[]): void {
  const all = leases.flatMap((l) => l.podCIDRs.map((c) => ({ node: l.node, p: parsePrefix(c), c })));
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      if (a && b) assert.ok(!overlaps(a.p, b.p), `${a.node} ${a.c} overlaps ${b.node} ${b.c}`);
    }
  }
}

const childMode = process.env.FLATNET_STORE_CHILD;
if (childMode) {
  await runChild(childMode);
} else {
  const self = fileURLToPath(import.meta.url);
  let root = '';
  let n = 0;
  const freshDir = (): string => join(root, `s${n++}`);
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'flatnet-store-test-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  void describe('EmbeddedStore', () => {
    void it('gives 20 racing processes 20 disjoint dual-stack subnets', async () => {
      const dir = freshDir();
      const ready = join(root, `ready${n}`);
      const go = join(root, `go${n}`);
      await new EmbeddedStore({ dir }).list(); // creates the directory once, so children race on claims only
      await rm(ready, { recursive: true, force: true });
      await import('node:fs/promises').then((fs) => fs.mkdir(ready));
      const children = Array.from({ length: 20 }, (_, i) =>
        run([process.execPath, '--import', 'tsx', self], {
          timeoutMs: 120_000,
          env: {
            ...process.env,
            FLATNET_STORE_CHILD: 'race',
            STORE_DIR: dir,
            NODE_NAME: `node-${i}`,
            NODE_INDEX: String(i + 1),
            READY_DIR: ready,
            GO_FILE: go,
          },
        }),
      );
      while ((await readdir(ready)).length < 20) await sleep(20);
      const t0 = performance.now();
      await writeFile(go, '');
      const results = await Promise.all(children);
      const elapsed = performance.now() - t0;
      for (const r of results) assert.equal(r.code, 0, r.stderr);
      const leases = results.map((r) => JSON.parse(r.stdout) as NodeLease);
      assertDisjoint(leases);
      const listed = await new EmbeddedStore({ dir }).list();
      assert.equal(listed.length, 20);
      assert.deepEqual(
        new Set(listed.flatMap((l) => l.podCIDRs)),
        new Set(leases.flatMap((l) => l.podCIDRs)),
      );
      // the 20 lowest subnets of each family, no holes
      const v4 = listed.map((l) => l.podCIDRs[0]).sort((a, b) => parsePrefix(a ?? '').ip.value < parsePrefix(b ?? '').ip.value ? -1 : 1);
      assert.deepEqual(v4, Array.from({ length: 20 }, (_, i) => `10.244.${i}.0/24`));
      console.log(`# 20-process race settled in ${elapsed.toFixed(0)} ms after go`);
    });

    void it('after a restart, renews and lists every node\'s subnets in the order its lease had them', async () => {
      const dir = freshDir();
      const s1 = new EmbeddedStore({ dir });
      const first: NodeLease[] = [];
      for (let i = 0; i < 8; i++) first.push(await s1.acquire(req(`n${i}`, i + 1)));
      await s1.close();
      // A fresh instance has acquired nothing itself: only the claim files say which subnets are whose. Each
      // renewal rewrites them, so every restart sees them in another directory order.
      for (let restart = 1; restart <= 4; restart++) {
        const s2 = new EmbeddedStore({ dir });
        for (const l of first) {
          assert.equal(l.podCIDRs.length, 2, 'dual-stack');
          const renewed = await s2.renew(l.node, { underlayIPs: l.underlayIPs, backend: 'host-gw' }, 30_000);
          assert.deepEqual(renewed.podCIDRs, l.podCIDRs, `${l.node}, restart ${restart}`);
        }
        const listed = await s2.list();
        for (const l of first) assert.deepEqual(listed.find((x) => x.node === l.node)?.podCIDRs, l.podCIDRs, `${l.node} listed, restart ${restart}`);
        await s2.close();
      }
    });

    void it('keeps the subnet across restarts and renewals, and writes 0600 files in 0700 dirs', async () => {
      const dir = freshDir();
      const s1 = new EmbeddedStore({ dir });
      const a = await s1.acquire(req('a', 1));
      const b = await s1.acquire(req('b', 2));
      await s1.close();
      const s2 = new EmbeddedStore({ dir });
      assert.deepEqual((await s2.acquire(req('b', 2))).podCIDRs, b.podCIDRs);
      const renewed = await s2.renew('a', { underlayIPs: ['192.168.9.9'], backend: 'vxlan', vtepMAC: '02:00:00:00:00:01' }, 30_000);
      // In the order acquire gave them (IPv4 first here), not the directory's: a fresh instance has not
      // acquired 'a' itself, and the families used to come back in readdir order now and then.
      assert.deepEqual(renewed.podCIDRs, a.podCIDRs);
      const listed = await s2.list();
      assert.deepEqual(listed.find((l) => l.node === 'a')?.underlayIPs, ['192.168.9.9']);
      assert.equal(listed.find((l) => l.node === 'a')?.vtepMAC, '02:00:00:00:00:01');
      for (const d of [dir, join(dir, 'claims'), join(dir, 'tmp')]) assert.equal((await stat(d)).mode & 0o777, 0o700, d);
      const files = await readdir(join(dir, 'claims'));
      assert.ok(files.length > 0);
      for (const f of files) assert.equal((await stat(join(dir, 'claims', f))).mode & 0o777, 0o600, f);
      // renewals do not pile up files: at most two generations per subnet
      for (let i = 0; i < 10; i++) await s2.renew('a', { underlayIPs: ['192.168.9.9'], backend: 'host-gw' }, 30_000);
      const aFiles = (await readdir(join(dir, 'claims'))).filter((f) => f.startsWith('10.244.0.0_24@'));
      assert.ok(aFiles.length <= 2, aFiles.join(' '));
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    });

    void it('frees an expired subnet only after the reuse grace', async () => {
      const dir = freshDir();
      let now = 1_000_000;
      const store = new EmbeddedStore({ dir, reuseGraceMs: 5_000, now: () => now });
      const a = await store.acquire(req('a', 1, 1_000));
      now += 1_500; // a expired 500 ms ago
      assert.deepEqual((await store.list()).map((l) => l.node), []);
      const b = await store.acquire(req('b', 2));
      assert.notDeepEqual(b.podCIDRs, a.podCIDRs);
      assert.deepEqual(b.podCIDRs, ['10.244.1.0/24', 'fd10:244:0:1::/64']);
      now += 5_000; // a lapsed 5.5 s ago: past the grace
      const c = await store.acquire(req('c', 3));
      assert.deepEqual(c.podCIDRs, a.podCIDRs);
      await assert.rejects(store.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 1_000), LeaseLostError);
      const a2 = await store.acquire(req('a', 1));
      assert.deepEqual(a2.podCIDRs, ['10.244.2.0/24', 'fd10:244:0:2::/64']);
      assertDisjoint(await store.list());
    });

    void it('gives an expired node its subnet back when nobody took it', async () => {
      const dir = freshDir();
      let now = 1_000_000;
      const store = new EmbeddedStore({ dir, reuseGraceMs: 5_000, now: () => now });
      await store.acquire(req('a', 1, 1_000));
      const b = await store.acquire(req('b', 2, 1_000));
      now += 3_600_000;
      const fresh = new EmbeddedStore({ dir, reuseGraceMs: 5_000, now: () => now });
      assert.deepEqual((await fresh.acquire(req('b', 2))).podCIDRs, b.podCIDRs);
    });

    void it('release keeps the subnet blocked for the grace, then frees it', async () => {
      const dir = freshDir();
      let now = 1_000_000;
      const store = new EmbeddedStore({ dir, reuseGraceMs: 5_000, now: () => now });
      const a = await store.acquire(req('a', 1));
      await store.release('a');
      assert.deepEqual(await store.list(), []);
      assert.notDeepEqual((await store.acquire(req('b', 2))).podCIDRs, a.podCIDRs);
      now += 5_001;
      assert.deepEqual((await store.acquire(req('c', 3))).podCIDRs, a.podCIDRs);
    });

    void it('skips malformed files, reports them, and never hands out their subnets', async () => {
      const dir = freshDir();
      const invalid: [string, string][] = [];
      const store = new EmbeddedStore({ dir, network, onInvalid: (k, r) => invalid.push([k, r]) });
      await store.acquire(req('a', 1));
      const claims = join(dir, 'claims');
      await writeFile(join(claims, '10.244.1.0_24@0'), '{not json', { mode: 0o600 });
      const badLease = { node: 'evil', podCIDRs: ['10.244.2.0/24'], expiresAt: Date.now() + 60_000, underlayIPs: ['1.2.3.4'], backend: 'carrier-pigeon' };
      await writeFile(join(claims, '10.244.2.0_24@0'), JSON.stringify({ subnet: '10.244.2.0/24', gen: 0, heldUntil: Date.now() + 60_000, since: 0, lease: badLease }));
      const outside = { node: 'out', podCIDRs: ['10.99.0.0/24'], expiresAt: Date.now() + 60_000, underlayIPs: ['1.2.3.5'], backend: 'host-gw' };
      await writeFile(join(claims, '10.99.0.0_24@0'), JSON.stringify({ subnet: '10.99.0.0/24', gen: 0, heldUntil: Date.now() + 60_000, since: 0, lease: outside }));
      await writeFile(join(claims, 'junk'), 'x');
      const listed = await store.list();
      assert.deepEqual(listed.map((l) => l.node), ['a']);
      const reasons = invalid.map(([k, r]) => `${k}: ${r}`).join('\n');
      assert.match(reasons, /10\.244\.1\.0_24@0: not JSON/);
      assert.match(reasons, /10\.244\.2\.0_24@0: .*backend "carrier-pigeon"/);
      assert.match(reasons, /node:out: .*outside the cluster CIDRs/);
      assert.match(reasons, /junk: not a claim file name/);
      const b = await store.acquire(req('b', 2));
      const c = await store.acquire(req('c', 3));
      assert.deepEqual([b.podCIDRs[0], c.podCIDRs[0]], ['10.244.3.0/24', '10.244.4.0/24']);
    });

    void it('rejects bad requests with LeaseRequestError', async () => {
      const store = new EmbeddedStore({ dir: freshDir() });
      await assert.rejects(store.acquire(req('../etc', 1)), LeaseRequestError);
      await assert.rejects(store.acquire({ ...req('a', 1), underlayIPs: ['300.1.1.1'] }), LeaseRequestError);
      await assert.rejects(store.acquire({ ...req('a', 1), network: { clusterCIDRs: ['10.0.0.0/8'], nodePrefixLength: {} } }), LeaseRequestError);
      await assert.rejects(store.renew('nobody', { underlayIPs: ['1.1.1.1'], backend: 'host-gw' }, 1000), LeaseLostError);
    });

    void it('notifies a watcher when another store instance acquires', async () => {
      const dir = freshDir();
      const s1 = new EmbeddedStore({ dir });
      const s2 = new EmbeddedStore({ dir });
      await s1.list();
      let fired = 0;
      const w = s1.watch(() => fired++);
      try {
        await sleep(50);
        const t0 = performance.now();
        await s2.acquire(req('x', 1));
        while (fired === 0 && performance.now() - t0 < 2_000) await sleep(5);
        assert.ok(fired > 0, 'watch did not fire');
      } finally {
        w.close();
        await s1.close();
      }
    });

    void it('survives SIGKILL at random instants mid-acquire: nothing blocks, nothing overlaps', async () => {
      const dir = freshDir();
      const printed: NodeLease[] = [];
      for (let round = 0; round < 6; round++) {
        // two churners at once, killed after a random time
        const rs = await Promise.all(
          [0, 1].map((k) =>
            run([process.execPath, '--import', 'tsx', self], {
              timeoutMs: 600 + Math.floor(Math.random() * 900),
              env: { ...process.env, FLATNET_STORE_CHILD: 'churn', STORE_DIR: dir, NODE_PREFIX: `r${round}k${k}`, NODE_INDEX: String(1000 + (round * 2 + k) * 500) },
            }),
          ),
        );
        for (const r of rs) {
          assert.match(r.stderr, /killed by SIGKILL/);
          for (const line of r.stdout.split('\n')) if (line.trim()) printed.push(JSON.parse(line) as NodeLease);
        }
      }
      const invalid: string[] = [];
      const store = new EmbeddedStore({ dir, onInvalid: (k, r) => invalid.push(`${k}: ${r}`) });
      const t0 = performance.now();
      const fresh = await store.acquire(req('after-kill', 999));
      const ms = performance.now() - t0;
      assert.ok(ms < 1_000, `acquire after kills took ${ms} ms`);
      const listed = await store.list();
      assertDisjoint(listed);
      assert.deepEqual(invalid, [], 'a kill left a torn or misnamed claim file');
      // every acquire that returned is still held, with the subnet it reported
      for (const p of printed) assert.deepEqual(listed.find((l) => l.node === p.node)?.podCIDRs, p.podCIDRs, p.node);
      assert.ok(listed.some((l) => l.node === 'after-kill' && l.podCIDRs[0] === fresh.podCIDRs[0]));
      console.log(`# SIGKILL rounds: ${printed.length} completed acquires, ${listed.length} leases, acquire after kills ${ms.toFixed(1)} ms`);
    });
  });
}
