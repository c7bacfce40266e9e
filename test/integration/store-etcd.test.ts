// EtcdStore against a real etcd 3.4 that this file starts on free ports and stops in after().
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { overlaps, parsePrefix } from '../../src/net/ip.ts';
import { EtcdStore } from '../../src/store/etcd.ts';
import type { EtcdStoreOptions } from '../../src/store/etcd.ts';
import { isRetryable, LeaseLostError } from '../../src/store/types.ts';
import type { AcquireRequest, ClusterNetwork, NodeLease } from '../../src/store/types.ts';
import { startEtcd } from '../tools/etcd.ts';
import type { EtcdServer } from '../tools/etcd.ts';

const network: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16', 'fd10:244::/56'], nodePrefixLength: { 4: 24, 6: 64 } };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function req(node: string, i: number, ttlMs = 30_000): AcquireRequest {
  return { node, network, ttlMs, underlayIPs: [`192.168.0.${i}`], backend: 'host-gw' };
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

let etcd: EtcdServer | undefined;
const stores: EtcdStore[] = [];
let clusterN = 0;

/** A store on its own cluster prefix, so tests do not see each other's leases; closed in after(). */
function open(opts: Partial<EtcdStoreOptions> & { cluster?: string } = {}): EtcdStore {
  const s = new EtcdStore({ endpoints: [etcd?.endpoint ?? ''], callTimeoutMs: 2_000, ...opts });
  stores.push(s);
  return s;
}

before(async () => {
  const t0 = performance.now();
  etcd = await startEtcd();
  console.log(`# etcd healthy after ${(performance.now() - t0).toFixed(0)} ms at ${etcd.endpoint}`);
});

after(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
  await etcd?.stop();
});

void describe('EtcdStore', () => {
  void it('gives 16 concurrent acquirers (16 clients) 16 disjoint subnets', async () => {
    const cluster = `race${clusterN++}`;
    const racers = Array.from({ length: 16 }, () => open({ cluster }));
    await Promise.all(racers.map((s) => s.list())); // connect first, so the race is on the transactions
    const t0 = performance.now();
    const leases = await Promise.all(racers.map((s, i) => s.acquire(req(`node-${i}`, i + 1))));
    const ms = performance.now() - t0;
    assertDisjoint(leases);
    const listed = await open({ cluster }).list();
    assert.equal(listed.length, 16);
    assert.deepEqual(
      listed.map((l) => l.podCIDRs[0]).sort((a, b) => (parsePrefix(a ?? '').ip.value < parsePrefix(b ?? '').ip.value ? -1 : 1)),
      Array.from({ length: 16 }, (_, i) => `10.244.${i}.0/24`),
    );
    console.log(`# 16-way etcd race settled in ${ms.toFixed(0)} ms`);
  });

  void it('keeps the subnet across a store restart and renewals', async () => {
    const cluster = `restart${clusterN++}`;
    const s1 = open({ cluster });
    await s1.acquire(req('a', 1));
    const b = await s1.acquire(req('b', 2));
    await s1.close();
    const s2 = open({ cluster });
    const again = await s2.acquire(req('b', 2));
    assert.deepEqual(again.podCIDRs, b.podCIDRs);
    const renewed = await s2.renew('b', { underlayIPs: ['192.168.7.7'], backend: 'vxlan', vtepMAC: '02:00:00:00:00:02' }, 30_000);
    assert.deepEqual(renewed.podCIDRs, b.podCIDRs);
    const listed = await open({ cluster }).list();
    assert.deepEqual(listed.find((l) => l.node === 'b')?.underlayIPs, ['192.168.7.7']);
    assert.equal(listed.length, 2);
    // a fresh instance (no memory of the acquire) can renew too
    const s3 = open({ cluster });
    assert.deepEqual((await s3.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000)).podCIDRs[0], '10.244.0.0/24');
  });

  void it("fires a watch on another node's acquire", async () => {
    const cluster = `watch${clusterN++}`;
    const watcher = open({ cluster });
    let fired = 0;
    const w = watcher.watch(() => fired++);
    try {
      await sleep(200);
      fired = 0;
      const t0 = performance.now();
      await open({ cluster }).acquire(req('x', 1));
      while (fired === 0 && performance.now() - t0 < 3_000) await sleep(2);
      assert.ok(fired > 0, 'watch did not fire');
      console.log(`# watch fired ${(performance.now() - t0).toFixed(1)} ms after acquire started`);
    } finally {
      w.close();
    }
  });

  void it('frees an expired lease only after the reuse grace', async () => {
    const cluster = `expiry${clusterN++}`;
    const grace = 2_500;
    const s = open({ cluster, reuseGraceMs: grace });
    const t0 = Date.now();
    const a = await s.acquire(req('a', 1, 1_000));
    // wait for etcd to expire the lease key
    while ((await s.list()).some((l) => l.node === 'a')) {
      assert.ok(Date.now() - t0 < 10_000, 'etcd never expired the lease');
      await sleep(50);
    }
    const expiredAt = Date.now();
    assert.ok(expiredAt < t0 + 1_000 + grace - 300, `lease took ${expiredAt - t0} ms to expire; too slow to test the grace`);
    const b = await s.acquire(req('b', 2));
    assert.notDeepEqual(b.podCIDRs, a.podCIDRs, 'handed out within the grace');
    await assert.rejects(open({ cluster }).renew('b2', { underlayIPs: ['192.168.0.9'], backend: 'host-gw' }, 1_000), LeaseLostError);
    // The grace runs from the expiry the store wrote (a.expiresAt, taken after its first round trip to
    // etcd), not from t0: a slow first connection would otherwise put this check inside the grace.
    await sleep(Math.max(0, Math.max(t0 + 1_000, a.expiresAt) + grace + 100 - Date.now()));
    const c = await s.acquire(req('c', 3));
    assert.deepEqual(c.podCIDRs, a.podCIDRs, 'not reused after the grace');
    // a comes back: its subnet is gone, renew says so, acquire gives it a new one
    await assert.rejects(s.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 1_000), LeaseLostError);
    const a2 = await s.acquire(req('a', 1));
    assert.deepEqual(a2.podCIDRs, ['10.244.2.0/24', 'fd10:244:0:2::/64']);
    assertDisjoint(await s.list());
  });

  void it('release frees the subnet after the grace, not before', async () => {
    const cluster = `release${clusterN++}`;
    let now = 1_000_000;
    const s = open({ cluster, reuseGraceMs: 5_000, now: () => now });
    const a = await s.acquire(req('a', 1));
    await s.release('a');
    assert.deepEqual(await s.list(), []);
    assert.notDeepEqual((await s.acquire(req('b', 2))).podCIDRs, a.podCIDRs);
    now += 5_001;
    assert.deepEqual((await s.acquire(req('c', 3))).podCIDRs, a.podCIDRs);
  });

  void it('skips malformed keys written by someone else and reports why', async () => {
    const cluster = `bad${clusterN++}`;
    const invalid: string[] = [];
    const s = open({ cluster, network, onInvalid: (k, r) => invalid.push(`${k}: ${r}`) });
    await s.acquire(req('a', 1));
    const raw = new Etcd3({ hosts: etcd?.endpoint ?? '' });
    try {
      const p = `/flatnet/${cluster}/`;
      const lease = await raw.leaseClient.leaseGrant({ TTL: 60, ID: 0 });
      const put = (k: string, v: string, withLease = true): Promise<unknown> =>
        raw.kv.put({ key: Buffer.from(p + k), value: Buffer.from(v), ...(withLease ? { lease: lease.ID } : {}) });
      await put('leases/garbage', '{nope');
      await put('leases/evil', JSON.stringify({ node: 'evil', podCIDRs: ['10.244.9.0/24'], expiresAt: 0, underlayIPs: ['1.1.1.1'], backend: 'vxlan', vtepMAC: 'zz' }));
      await put('leases/thief', JSON.stringify({ node: 'thief', podCIDRs: ['10.244.0.0/24'], expiresAt: 0, underlayIPs: ['1.1.1.2'], backend: 'host-gw' }));
      await put('leases/forever', JSON.stringify({ node: 'forever', podCIDRs: ['10.244.8.0/24'], expiresAt: 0, underlayIPs: ['1.1.1.3'], backend: 'host-gw' }), false);
      await put('subnets/10.244.8.0_24', JSON.stringify({ node: 'forever', heldUntil: 0, since: 0 }), false);
      await put('subnets/10.244.1.0_24', 'garbage', false);
      const listed = await s.list();
      assert.deepEqual(listed.map((l) => l.node), ['a']);
      const text = invalid.join('\n');
      assert.match(text, /leases\/garbage: not JSON/);
      assert.match(text, /leases\/evil: .*malformed vtepMAC/);
      assert.match(text, /leases\/thief: lists 10\.244\.0\.0\/24, which is not claimed by thief/);
      assert.match(text, /leases\/forever: not bound to an etcd lease/);
      assert.match(text, /subnets\/10\.244\.1\.0_24: not JSON/);
      // the unreadable claim's subnet is never handed out
      const b = await s.acquire(req('b', 2));
      assert.equal(b.podCIDRs[0], '10.244.2.0/24');
    } finally {
      raw.close();
    }
  });

  void it('lists incrementally: the same array while nothing changed; new, changed and deleted keys, past one page', async () => {
    const cluster = `incr${clusterN++}`;
    const s = open({ cluster, network });
    const other = open({ cluster, network });
    const a = await s.acquire(req('a', 1));
    await other.acquire(req('b', 2));
    const l1 = await s.list();
    assert.equal(await s.list(), l1, 'nothing changed, so the very same array');
    const b2 = await other.renew('b', { underlayIPs: ['192.168.0.22'], backend: 'host-gw' }, 30_000);
    const l2 = await s.list();
    assert.notEqual(l2, l1);
    assert.deepEqual(l2.find((l) => l.node === 'b'), b2);
    assert.equal(l2.find((l) => l.node === 'a'), l1.find((l) => l.node === 'a'), 'an unchanged record keeps its object');
    await other.release('b');
    assert.deepEqual((await s.list()).map((l) => l.node), ['a']);
    // 1,200 more nodes with /32 subnets, written as EtcdStore writes them (bench/convergence.ts does the same):
    // more than one page of keys. `wide` stores validate against /32 node subnets, `s` against /24 (so for
    // `s` they are invalid and only reported).
    const wide = { clusterCIDRs: ['10.244.0.0/16'], nodePrefixLength: { 4: 32 } };
    const incremental = open({ cluster, network: wide });
    assert.deepEqual(await incremental.list(), []);
    const raw = new Etcd3({ hosts: etcd?.endpoint ?? '' });
    try {
      const p = `/flatnet/${cluster}/`;
      const bulk = (await raw.leaseClient.leaseGrant({ TTL: 600, ID: 0 })).ID;
      for (let from = 0; from < 1_200; from += 60) {
        const ops = [];
        for (let i = from; i < from + 60; i++) {
          const node = `sim-${i}`;
          const ip = `10.244.${10 + (i >> 8)}.${i & 255}`;
          const lease: NodeLease = { node, podCIDRs: [`${ip}/32`], expiresAt: Date.now() + 600_000, underlayIPs: [`192.168.${100 + (i >> 8)}.${i & 255}`], backend: 'host-gw' };
          ops.push({ request_put: { key: Buffer.from(`${p}subnets/${ip}_32`), value: Buffer.from(JSON.stringify({ node, heldUntil: lease.expiresAt, since: 0 })) } });
          ops.push({ request_put: { key: Buffer.from(`${p}leases/${node}`), value: Buffer.from(JSON.stringify(lease)), lease: bulk } });
        }
        await raw.kv.txn({ compare: [], success: ops, failure: [] });
      }
      const fresh = open({ cluster, network: wide });
      assert.equal((await fresh.list()).length, 1_200, 'a first read, in pages, sees every lease');
      assert.equal((await incremental.list()).length, 1_200, 'a read of what changed, in pages, too');
      assert.deepEqual((await s.list()).map((l) => l.node), ['a']);
      await raw.leaseClient.leaseRevoke({ ID: bulk });
      assert.deepEqual(await incremental.list(), [], 'keys deleted since the last read are found');
      assert.deepEqual((await s.list()).map((l) => l.node), [a.node]);
    } finally {
      raw.close();
    }
  });

  void it('recovers when etcd stops and restarts on the same data; leases stay intact', async () => {
    const cluster = `outage${clusterN++}`;
    const s = open({ cluster, callTimeoutMs: 1_000 });
    const a = await s.acquire(req('a', 1, 30_000));
    await s.acquire(req('b', 2, 30_000));
    let fired = 0;
    const w = s.watch(() => fired++);
    try {
      await etcd?.kill();
      const t0 = performance.now();
      const err = await s.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000).then(
        () => undefined,
        (e: unknown) => (e instanceof Error ? e : new Error('non-Error rejection')),
      );
      assert.ok(err !== undefined, 'renew succeeded with etcd down');
      assert.ok(isRetryable(err), `not retryable: ${err.message}`);
      const failMs = performance.now() - t0;
      await etcd?.start();
      const t1 = performance.now();
      let renewed: NodeLease | undefined;
      while (!renewed) {
        assert.ok(performance.now() - t1 < 20_000, 'client did not recover within 20 s');
        try {
          renewed = await s.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000);
        } catch (e) {
          assert.ok(isRetryable(e), `not retryable: ${String(e)}`);
          await sleep(100);
        }
      }
      const recoverMs = performance.now() - t1;
      assert.deepEqual(renewed.podCIDRs, a.podCIDRs);
      const listed = await s.list();
      assert.deepEqual(listed.map((l) => l.node).sort(), ['a', 'b']);
      const c = await s.acquire(req('c', 3));
      assertDisjoint([...listed, c]);
      const firedBefore = fired;
      await open({ cluster }).acquire(req('d', 4));
      const t2 = performance.now();
      while (fired === firedBefore && performance.now() - t2 < 5_000) await sleep(10);
      assert.ok(fired > firedBefore, 'watch did not resume after the restart');
      console.log(`# etcd outage: renew failed retryable in ${failMs.toFixed(0)} ms; recovered ${recoverMs.toFixed(0)} ms after etcd restart`);
    } finally {
      w.close();
      if (etcd && etcd.pid() === undefined) await etcd.start();
    }
  });
});
