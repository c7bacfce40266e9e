// KubeStore against a STAND-IN Kubernetes API server (src/lab/kube-apiserver-standin.ts): there is no
// kube-apiserver on these machines. The stand-in speaks the same HTTP for the calls the store makes (node
// get/list/watch/merge patch, bearer tokens, resourceVersions, 410 Gone); the test plays
// kube-controller-manager by setting spec.podCIDRs.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ANNOTATION, KubeStore } from '../../src/store/kubernetes.ts';
import type { KubeStoreOptions } from '../../src/store/kubernetes.ts';
import { isRetryable, LeaseLostError, LeaseRequestError } from '../../src/store/types.ts';
import type { AcquireRequest, ClusterNetwork } from '../../src/store/types.ts';
import { KubeApiStandin } from '../../src/lab/kube-apiserver-standin.ts';
import { waitFor } from '../tools/wait.ts';

const network: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16', 'fd10:244::/56'], nodePrefixLength: { 4: 24, 6: 64 } };
const TOKEN = 'standin-token-1';

function req(node: string, i: number, ttlMs = 30_000): AcquireRequest {
  return { node, network, ttlMs, underlayIPs: [`192.168.0.${i}`], backend: 'host-gw' };
}

let api: KubeApiStandin;
let dir: string;
let tokenFile: string;
const stores: KubeStore[] = [];

function open(opts: Partial<KubeStoreOptions> = {}): KubeStore {
  const s = new KubeStore({ server: api.url, tokenFile, callTimeoutMs: 1_000, network, ...opts });
  stores.push(s);
  return s;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fnt-kube-'));
  tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  api = new KubeApiStandin(TOKEN);
  await api.start();
});

after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

void describe('KubeStore (against the API server stand-in)', () => {
  void it("leases a node its spec.podCIDRs and publishes its attributes as annotations on its Node", async () => {
    api.addNode('k-a', ['10.244.7.0/24', 'fd10:244:0:7::/64']);
    const s = open();
    const lease = await s.acquire({ ...req('k-a', 1), underlayIPs: ['192.168.0.1', 'fd00::1'], backend: 'vxlan', vtepMAC: '0e:00:00:00:00:01' });
    assert.deepEqual(lease.podCIDRs, ['10.244.7.0/24', 'fd10:244:0:7::/64']);
    assert.deepEqual(lease.underlayIPs, ['192.168.0.1', 'fd00::1']);
    const a = api.node('k-a')?.metadata.annotations ?? {};
    assert.equal(a[ANNOTATION.underlayIPs], '192.168.0.1,fd00::1');
    assert.equal(a[ANNOTATION.backend], 'vxlan');
    assert.equal(a[ANNOTATION.vtepMAC], '0e:00:00:00:00:01');
    assert.deepEqual(Object.keys(a).sort(), [ANNOTATION.backend, ANNOTATION.underlayIPs, ANNOTATION.vtepMAC].sort(), 'three annotations, no expiry to keep renewing');
    assert.deepEqual(api.node('k-a')?.spec.podCIDRs, ['10.244.7.0/24', 'fd10:244:0:7::/64'], 'the spec is never written');
    const listed = (await open().list()).find((l) => l.node === 'k-a');
    assert.deepEqual(listed?.podCIDRs, lease.podCIDRs);
    assert.equal(listed?.vtepMAC, '0e:00:00:00:00:01');
  });

  void it('waits (retryable) for the node to be registered and for its podCIDRs, then succeeds', async () => {
    const s = open();
    await assert.rejects(s.acquire(req('k-b', 2)), (e: Error) => isRetryable(e) && /not registered/.test(e.message));
    api.addNode('k-b');
    await assert.rejects(s.acquire(req('k-b', 2)), (e: Error) => isRetryable(e) && /spec\.podCIDRs/.test(e.message) && /allocate-node-cidrs/.test(e.message));
    assert.equal(api.node('k-b')?.metadata.annotations, undefined, 'nothing written while it cannot lease');
    api.setPodCIDRs('k-b', ['10.244.8.0/24']);
    assert.deepEqual((await s.acquire(req('k-b', 2))).podCIDRs, ['10.244.8.0/24']);
  });

  void it('refuses podCIDRs that do not fit flatnet\'s network, naming the field, and writes nothing', async () => {
    api.addNode('k-c', ['10.99.0.0/24']);
    api.addNode('k-d', ['10.244.9.0/25']);
    const s = open();
    await assert.rejects(s.acquire(req('k-c', 3)), (e: Error) => e instanceof LeaseRequestError && /spec\.podCIDRs/.test(e.message) && /outside the cluster CIDRs/.test(e.message));
    await assert.rejects(s.acquire(req('k-d', 4)), (e: Error) => e instanceof LeaseRequestError && /is not a \/24/.test(e.message));
    assert.equal(api.node('k-c')?.metadata.annotations, undefined);
    assert.equal(api.node('k-d')?.metadata.annotations, undefined);
  });

  void it('skips and reports malformed records someone else wrote, and keeps the older of two overlapping nodes', async () => {
    const invalid: string[] = [];
    const s = open({ onInvalid: (key, reason) => invalid.push(`${key}: ${reason}`) });
    api.addNode('k-e', ['10.244.10.0/24'], new Date(Date.now() - 60_000));
    await s.acquire(req('k-e', 5));
    // A hand-edited node whose CIDR overlaps k-e's, published by hand.
    api.addNode('k-f', ['10.244.10.0/24']);
    for (const [k, v] of Object.entries({ [ANNOTATION.underlayIPs]: '192.168.0.6', [ANNOTATION.backend]: 'host-gw' })) api.setAnnotation('k-f', k, v);
    // Malformed annotations on a third node.
    api.addNode('k-g', ['10.244.11.0/24']);
    for (const [k, v] of Object.entries({ [ANNOTATION.underlayIPs]: '192.168.0.7; rm -rf /', [ANNOTATION.backend]: 'host-gw' })) api.setAnnotation('k-g', k, v);
    api.addNode('k-h', ['10.244.12.0/24']);
    for (const [k, v] of Object.entries({ [ANNOTATION.underlayIPs]: '192.168.0.8', [ANNOTATION.backend]: 'vxlan', [ANNOTATION.vtepMAC]: '01:00:5e:00:00:01' })) api.setAnnotation('k-h', k, v);
    const names = (await s.list()).map((l) => l.node);
    assert.ok(names.includes('k-e'));
    for (const n of ['k-f', 'k-g', 'k-h']) assert.ok(!names.includes(n), `${n} must be skipped: ${names.join(',')}`);
    assert.ok(invalid.some((l) => l.startsWith('node/k-f') && /overlaps 10\.244\.10\.0\/24 of node k-e/.test(l)), invalid.join('\n'));
    assert.ok(invalid.some((l) => l.startsWith('node/k-g') && /malformed underlay IP/.test(l)), invalid.join('\n'));
    assert.ok(invalid.some((l) => l.startsWith('node/k-h') && /vtepMAC 01:00:5e:00:00:01 is not a unicast address/.test(l)), invalid.join('\n'));
    // The younger overlapping node's own agent is refused its lease.
    await assert.rejects(open().acquire(req('k-f', 6)), (e: Error) => e instanceof LeaseRequestError && /overlaps/.test(e.message));
    // A second list reports nothing new: each problem once per record.
    const n = invalid.length;
    await s.list();
    assert.equal(invalid.length, n);
  });

  void it('renew writes nothing while nothing changed, writes a changed attribute; a changed podCIDR or a deleted node loses the lease', async () => {
    api.addNode('k-i', ['10.244.13.0/24']);
    const s = open();
    const patches = (): number => api.served.get('PATCH patch') ?? 0;
    const p0 = patches();
    const first = await s.acquire(req('k-i', 9));
    assert.equal(patches(), p0 + 1, 'acquire publishes once');
    // Every write to a Node reaches every Node watcher in the cluster: steady renewals must not write.
    for (let i = 0; i < 5; i++) await s.renew('k-i', { underlayIPs: ['192.168.0.9'], backend: 'host-gw' }, 3_000);
    assert.equal(patches(), p0 + 1, 'five renewals of an unchanged lease wrote nothing');
    const w = s.watch(() => undefined);
    try {
      await waitFor('the watch to be open', 5_000, () => s.watching, 20);
      const gets = api.served.get('GET get') ?? 0;
      await s.renew('k-i', { underlayIPs: ['192.168.0.9'], backend: 'host-gw' }, 3_000);
      assert.equal(api.served.get('GET get') ?? 0, gets, 'with the watch open, a renewal reads the node from its copy');
    } finally {
      w.close();
    }
    const moved = await s.renew('k-i', { underlayIPs: ['192.168.0.99'], backend: 'host-gw' }, 3_000);
    assert.equal(patches(), p0 + 2, 'a changed underlay address is written');
    assert.deepEqual(moved.underlayIPs, ['192.168.0.99']);
    assert.equal(api.node('k-i')?.metadata.annotations?.[ANNOTATION.underlayIPs], '192.168.0.99');
    assert.equal(first.expiresAt, moved.expiresAt, 'held while the Node exists: no expiry moves');
    // Restarting the agent (a new store) with the same attributes writes nothing either.
    await open().acquire({ ...req('k-i', 9), underlayIPs: ['192.168.0.99'] });
    assert.equal(patches(), p0 + 2);

    // The store reads its node from the watch's copy, so each change is seen once its event arrives.
    const lost = (re: RegExp) => async (): Promise<boolean> =>
      s.renew('k-i', { underlayIPs: ['192.168.0.99'], backend: 'host-gw' }, 3_000).then(
        () => false,
        (e: unknown) => e instanceof LeaseLostError && re.test(e.message),
      );
    api.setPodCIDRs('k-i', ['10.244.14.0/24']);
    await waitFor('a changed podCIDR to lose the lease', 5_000, lost(/changed from 10\.244\.13\.0\/24 to 10\.244\.14\.0\/24/), 20);
    api.deleteNode('k-i');
    await waitFor('the deleted Node to lose the lease', 5_000, lost(/deleted/), 20);
    assert.ok(!(await s.list()).some((l) => l.node === 'k-i'), 'a deleted Node holds no lease');
  });

  void it('reads leases from its watch: no LIST per list() while the watch is open, and others\' changes show', async () => {
    api.addNode('k-l1', ['10.244.40.0/24']);
    api.addNode('k-l2', ['10.244.41.0/24']);
    const s = open();
    await s.acquire(req('k-l1', 41));
    await open().acquire(req('k-l2', 42));
    const w = s.watch(() => undefined);
    try {
      const has = async (n: string): Promise<boolean> => (await s.list()).some((l) => l.node === n);
      await waitFor('the watch to be open', 5_000, () => s.watching, 20);
      assert.ok(await has('k-l2'));
      const lists = api.served.get('GET list') ?? 0;
      let same = 0;
      const first = await s.list();
      for (let i = 0; i < 20; i++) if ((await s.list()) === first) same++;
      assert.equal(api.served.get('GET list') ?? 0, lists, '20 list() calls made no LIST request');
      assert.equal(same, 20, 'an unchanged cluster gives the same answer');
      // Another client's change reaches list() through the watch.
      api.setAnnotation('k-l2', ANNOTATION.underlayIPs, 'not-an-ip');
      await waitFor('the change to show', 5_000, async () => !(await has('k-l2')), 20);
      api.deleteNode('k-l1');
      await waitFor('the deletion to show', 5_000, async () => !(await has('k-l1')), 20);
      assert.equal(api.served.get('GET list') ?? 0, lists, 'still no LIST');
    } finally {
      w.close();
    }
  });

  void it('release removes exactly flatnet\'s annotations', async () => {
    api.addNode('k-j', ['10.244.15.0/24']);
    api.setAnnotation('k-j', 'example.com/keep', 'yes');
    const s = open();
    await s.acquire(req('k-j', 10));
    await s.release('k-j');
    assert.deepEqual(api.node('k-j')?.metadata.annotations, { 'example.com/keep': 'yes' });
    assert.ok(!(await s.list()).some((l) => l.node === 'k-j'));
    await s.release('no-such-node'); // already gone: fine
  });

  void it('watch reports changes by others, and keeps reporting across dropped streams and 410 Gone', async () => {
    const s = open();
    let events = 0;
    const w = s.watch(() => events++);
    try {
      await waitFor('the watch to be open', 5_000, () => (api.served.get('GET watch') ?? 0) > 0, 20);
      const watchesBefore = api.served.get('GET watch') ?? 0;
      let seen = events;
      api.addNode('k-w1', ['10.244.20.0/24']);
      await waitFor('an event for an added node', 5_000, () => events > seen, 20);

      // The server drops the stream: the store resumes from the last version and misses nothing.
      api.dropWatches();
      await waitFor('a new watch', 5_000, () => (api.served.get('GET watch') ?? 0) > watchesBefore, 20);
      seen = events;
      api.setAnnotation('k-w1', 'example.com/x', '1');
      await waitFor('an event after the stream was dropped', 5_000, () => events > seen, 20);

      // History compacted while the watch was down: the server answers 410, the store lists afresh and
      // reports a change (it may have missed some).
      api.dropWatches();
      api.setAnnotation('k-w1', 'example.com/x', '2'); // a change the store cannot see before the compaction
      api.compact();
      seen = events;
      api.deleteNode('k-w1');
      await waitFor('an event after 410 Gone', 5_000, () => events > seen, 20);
      assert.ok((api.served.get('GET watch 410') ?? 0) > 0, 'the resumed watch was answered 410 Gone');
      await waitFor('a watch after the 410', 5_000, async () => !(await s.list()).some((l) => l.node === 'k-w1'), 20);
    } finally {
      w.close();
    }
  });

  void it('an API outage is a retryable error within the call deadline, and the store recovers by itself', async () => {
    api.addNode('k-o', ['10.244.16.0/24']);
    const s = open({ callTimeoutMs: 500 });
    await s.acquire(req('k-o', 11));
    let events = 0;
    const w = s.watch(() => events++);
    try {
      await api.stop();
      const t0 = Date.now();
      await assert.rejects(s.renew('k-o', { underlayIPs: ['192.168.0.11'], backend: 'host-gw' }, 30_000), (e: Error) => isRetryable(e) && /unreachable/.test(e.message));
      await assert.rejects(s.list(), (e: Error) => isRetryable(e));
      assert.ok(Date.now() - t0 < 2_000, 'each failed call ends within its deadline');
      await api.start(); // same port, same objects
      await s.renew('k-o', { underlayIPs: ['192.168.0.11'], backend: 'host-gw' }, 30_000);
      const seen = events;
      api.setAnnotation('k-o', 'example.com/y', '1');
      await waitFor('the watch to recover and report', 10_000, () => events > seen, 20);
    } finally {
      w.close();
    }
  });

  void it('speaks https, trusting exactly the CA it is given', async () => {
    // test/fixtures/kube-standin/: a throwaway CA and a server certificate for IP 127.0.0.1 (openssl, P-256,
    // 100 years), made for this test only.
    const fixtures = new URL('../fixtures/kube-standin/', import.meta.url).pathname;
    const tlsApi = new KubeApiStandin(TOKEN);
    await tlsApi.start('127.0.0.1', 0, { key: readFileSync(`${fixtures}server.key`), cert: readFileSync(`${fixtures}server.crt`) });
    try {
      assert.match(tlsApi.url, /^https:/);
      tlsApi.addNode('k-t', ['10.244.30.0/24']);
      const trusting = open({ server: tlsApi.url, caFile: `${fixtures}ca.crt` });
      assert.deepEqual((await trusting.acquire(req('k-t', 30))).podCIDRs, ['10.244.30.0/24']);
      // Node's own CA store does not know this CA: refused, as retryable (an operator can fix the CA file).
      const untrusting = open({ server: tlsApi.url });
      await assert.rejects(untrusting.list(), (e: Error) => isRetryable(e) && /certificate/i.test(e.message));
    } finally {
      await tlsApi.stop();
    }
  });

  void it('a wrong token is a retryable error that says what flatnetd needs', async () => {
    const bad = join(dir, 'bad-token');
    writeFileSync(bad, 'nope', { mode: 0o600 });
    const s = open({ tokenFile: bad });
    await assert.rejects(s.list(), (e: Error) => isRetryable(e) && /HTTP 401/.test(e.message) && /get, list, watch and patch on nodes/.test(e.message));
    // The token file is read on every call: a rotated token is used at once.
    writeFileSync(bad, TOKEN);
    await s.list();
  });
});
