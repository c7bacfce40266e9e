// When the plugin saves V8's code cache (src/plugin/code-cache.ts): the policy is pure; the files are
// checked end to end in test/integration/netlink.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheToWrite, saveCodeCache } from '../../src/plugin/code-cache.ts';

test('an ADD with no cache writes the ADD cache; the first DEL after it writes the superset; nothing else writes', () => {
  assert.equal(cacheToWrite('none', 'ADD', true), 'add');
  assert.equal(cacheToWrite('add', 'DEL', true), 'full');
  assert.equal(cacheToWrite('add', 'ADD', true), undefined);
  assert.equal(cacheToWrite('full', 'ADD', true), undefined);
  assert.equal(cacheToWrite('full', 'DEL', true), undefined);
  assert.equal(cacheToWrite('none', 'DEL', true), undefined, 'a DEL-only cache would keep ADDs from saving theirs');
  assert.equal(cacheToWrite('none', 'ADD', false), undefined, 'a failed call may have run an unusual path');
  for (const c of ['CHECK', 'STATUS', 'GC', 'VERSION', undefined]) assert.equal(cacheToWrite('none', c, true), undefined);
});

test('saving replaces atomically, removes other builds’ caches, and never throws on a read-only place', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fnt-cc-'));
  try {
    writeFileSync(join(dir, '.flatnet-0123456789abcdef.add.cache'), 'old build');
    writeFileSync(join(dir, 'flatnet'), 'the plugin');
    const base = join(dir, '.flatnet-fedcba9876543210');
    saveCodeCache({ base, have: 'none', create: () => Buffer.from('code') }, 'add');
    assert.deepEqual(readdirSync(dir).sort(), ['.flatnet-fedcba9876543210.add.cache', 'flatnet']);
    saveCodeCache({ base: join(dir, 'missing-dir', '.flatnet-fedcba9876543210'), have: 'none', create: () => Buffer.from('x') }, 'add');
    saveCodeCache({ base, have: 'add', create: () => { throw new Error('V8 could not serialise'); } }, 'full');
    assert.deepEqual(readdirSync(dir).sort(), ['.flatnet-fedcba9876543210.add.cache', 'flatnet'], 'no temp file left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
