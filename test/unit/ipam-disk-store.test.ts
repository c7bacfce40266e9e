// The disk store's owner index, in a temp directory (no root): ADD's duplicate check and DEL read only the
// files the index points at, and whatever a killed process or host-local left behind is still found.
// Every test runs once per implementation of the store's file calls (node:fs, and the addon's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore, indexName } from '../../src/ipam/disk-store.ts';
import { IMPLEMENTATIONS, countingReads } from '../tools/file-calls.ts';

for (const impl of IMPLEMENTATIONS) {
  const calls = impl.calls;
  const skip = calls ? false : 'the addon is not built here';
  const counting = calls ? countingReads(calls) : undefined;

  /** How many files `fn` reads through the store. */
  const countReads = (fn: () => void): number => {
    const before = counting!.reads();
    fn();
    return counting!.reads() - before;
  };

  const withStore = (fn: (s: DiskStore, dir: string) => void): void => {
    const base = mkdtempSync(join(tmpdir(), 'fnt-ipam-'));
    try {
      const s = new DiskStore(base, 'net', counting!.calls);
      s.ensureDir();
      fn(s, join(base, 'net'));
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  };

  const pod = (i: number) => ({ containerID: `pod-${i}`, ifname: 'eth0' });

  test(`${impl.name}: DEL and the duplicate check read only the owner’s files, however many pods the node has`, { skip }, () => {
    withStore((s) => {
      for (let i = 0; i < 100; i++) assert.ok(s.tryReserve(`10.1.0.${i + 2}`, pod(i)));
      assert.ok(s.tryReserve('fd00::7', pod(7)));
      let held: ReturnType<DiskStore['heldBy']> = [];
      assert.equal(countReads(() => (held = s.heldBy(pod(7)))), 2);
      assert.deepEqual(held.map((r) => r.ip).sort(), ['10.1.0.9', 'fd00::7']);
      let released: string[] = [];
      assert.equal(countReads(() => (released = s.releaseOwner(pod(7)))), 2);
      assert.deepEqual(released.sort(), ['10.1.0.9', 'fd00::7']);
      assert.equal(s.heldBy(pod(7)).length, 0);
      assert.equal(s.list().length, 99);
    });
  });

  test(`${impl.name}: reservations without an index entry (host-local’s, a killed plugin’s) are still found`, { skip }, () => {
    withStore((s, dir) => {
      // host-local's files: "id\r\nifname", and the legacy id-only form.
      writeFileSync(join(dir, '10.1.0.50'), 'pod-50\r\neth0');
      writeFileSync(join(dir, '10.1.0.51'), 'pod-51');
      // Ours, with the index entry lost (killed between the two links).
      assert.ok(s.tryReserve('10.1.0.52', pod(52)));
      unlinkSync(join(dir, indexName(pod(52), '10.1.0.52')!));
      assert.deepEqual(s.heldBy(pod(50)).map((r) => r.ip), ['10.1.0.50']);
      assert.deepEqual(s.heldBy(pod(52)).map((r) => r.ip), ['10.1.0.52']);
      assert.equal(s.tidy(), 2, 'GC indexes host-local’s ifname file and ours');
      assert.ok(existsSync(join(dir, indexName(pod(52), '10.1.0.52')!)));
      assert.equal(countReads(() => s.heldBy(pod(52))), 2, 'its own file, and the id-only legacy file (never indexed: it names no interface)');
      assert.deepEqual(s.releaseOwner(pod(51)), ['10.1.0.51'], 'an id-only file belongs to every interface of its container');
      assert.deepEqual(s.releaseOwner(pod(52)), ['10.1.0.52']);
    });
  });

  test(`${impl.name}: a stale index entry never makes someone else’s address ours; GC removes it`, { skip }, () => {
    withStore((s, dir) => {
      assert.ok(s.tryReserve('10.1.0.60', pod(60)));
      // pod-60's DEL killed after removing the reservation but before its index entry:
      unlinkSync(join(dir, '10.1.0.60'));
      assert.equal(s.heldBy(pod(60)).length, 0);
      // ...and the address reused by pod-61.
      assert.ok(s.tryReserve('10.1.0.60', pod(61)));
      assert.equal(s.heldBy(pod(60)).length, 0, 'not a duplicate for pod-60');
      assert.deepEqual(s.releaseOwner(pod(60)), [], 'pod-60’s DEL must not free pod-61’s address');
      assert.deepEqual(s.heldBy(pod(61)).map((r) => r.ip), ['10.1.0.60']);
      assert.equal(s.tidy(), 1);
      assert.ok(!existsSync(join(dir, indexName(pod(60), '10.1.0.60')!)));
      assert.ok(existsSync(join(dir, indexName(pod(61), '10.1.0.60')!)));
      assert.deepEqual(readdirSync(dir).filter((n) => !n.startsWith('.')), ['10.1.0.60']);
    });
  });

  test(`${impl.name}: release removes the reservation and its index entry; a second ADD of the same address is refused`, { skip }, () => {
    withStore((s, dir) => {
      assert.ok(s.tryReserve('10.1.0.70', pod(70)));
      assert.equal(s.tryReserve('10.1.0.70', pod(71)), false);
      assert.equal(readdirSync(dir).filter((n) => n.startsWith('.flatnet-tmp-')).length, 0, 'no temp file left');
      s.release('10.1.0.70', pod(71));
      assert.ok(existsSync(join(dir, '10.1.0.70')), 'only the owner releases');
      s.release('10.1.0.70', pod(70));
      assert.deepEqual(readdirSync(dir), []);
    });
  });

  test(`${impl.name}: the cursor is overwritten in place and cut to length: a shorter address after a longer one reads back exactly`, { skip }, () => {
    withStore((s, dir) => {
      s.setLastReserved(0, 'fd10:244:0:1::1234');
      s.setLastReserved(0, '10.244.0.100');
      s.setLastReserved(0, '10.244.0.9');
      assert.equal(s.lastReserved(0), '10.244.0.9');
      // host-local's format: the bare address, nothing after it.
      assert.equal(readFileSync(join(dir, 'last_reserved_ip.0'), 'utf8'), '10.244.0.9');
      s.setLastReserved(1, 'fd10:244:0:1::7');
      assert.equal(s.lastReserved(1), 'fd10:244:0:1::7');
    });
  });
}
