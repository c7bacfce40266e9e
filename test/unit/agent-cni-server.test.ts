// The pure parts of flatnetd's plugin-call server (src/agent/cni-server.ts): the socket's name, the
// launcher's frame, the answer's layout, finding the bundle in a plugin file, the builds it keeps, and
// the gate that starts calls one per turn of the event loop. The exchange itself is
// tested against the real launcher in test/integration/cni-agent-path.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { RecentCache, TurnGate, buildIdOf, bundleOf, cniSocketPath, encodeAnswer, parseCallHeader } from '../../src/agent/cni-server.ts';

function reason(b: Buffer): string {
  const r = parseCallHeader(b);
  assert.equal(typeof r, 'string', 'refused');
  return r as string;
}

const body = (fields: string[]) => Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');

test('the socket is named by the network namespace inode', () => {
  assert.equal(cniSocketPath('net:[4026531840]'), '/run/flatnet/cni-4026531840.sock');
  assert.equal(cniSocketPath('net:[1]', '/tmp/x'), '/tmp/x/cni-1.sock');
  for (const bad of ['mnt:[4026531840]', 'net:[]', 'net:[12a]', 'net:[1]/../x']) assert.throws(() => cniSocketPath(bad), /unexpected network namespace/);
});

test('a launcher frame is parsed into the caller and its environment', () => {
  const call = parseCallHeader(body(['FNC1', '0123456789abcdef', 'mnt:[4026531841]', '/opt/cni/bin/flatnet', 'CNI_COMMAND=ADD', 'A=b=c', 'EMPTY=', 'NOEQUALS', 'CNI_COMMAND=DEL']));
  assert.notEqual(typeof call, 'string');
  if (typeof call === 'string') return;
  assert.equal(call.buildId, '0123456789abcdef');
  assert.equal(call.mountNs, 'mnt:[4026531841]');
  assert.equal(call.plugin, '/opt/cni/bin/flatnet');
  // The first of two entries wins, as getenv(3) finds it; an entry without '=' is no variable.
  assert.deepEqual(call.env, { CNI_COMMAND: 'ADD', A: 'b=c', EMPTY: '' });
});

test('a malformed frame is refused with the reason', () => {
  assert.match(reason(Buffer.from('FNC1\0abc')), /NUL-terminated/);
  assert.match(reason(body(['FNC2', '0123456789abcdef', 'm', '/p'])), /magic/);
  assert.match(reason(body(['FNC1', '0123456789ABCDEF', 'm', '/p'])), /build id/);
  assert.match(reason(body(['FNC1', '0123456789abcde', 'm', '/p'])), /build id/);
  assert.match(reason(body(['FNC1', '0123456789abcdef', 'm', 'relative/p'])), /caller fields/);
  assert.match(reason(body(['FNC1', '0123456789abcdef'])), /caller fields/);
  assert.match(reason(Buffer.alloc(0)), /magic/);
});

test('the answer is the exit status, the length of stdout, stdout, then stderr', () => {
  const a = encodeAnswer(1, '{"code":7}\n', 'why\n');
  assert.equal(a[0], 1);
  assert.equal(a.readUInt32LE(1), 11);
  assert.equal(a.subarray(5, 16).toString(), '{"code":7}\n');
  assert.equal(a.subarray(16).toString(), 'why\n');
  const u = encodeAnswer(0, 'é', '');
  assert.equal(u.readUInt32LE(1), 2, 'the length counts bytes, not characters');
  assert.equal(encodeAnswer(256 + 3, '', '')[0], 3, 'an exit status is a byte');
});

test('the bundle is found after the launcher by the 10-digit trailer, and named by its hash', () => {
  const elf = Buffer.from('\x7fELF-launcher-bytes', 'latin1');
  const bundle = '(function (exports) { exports.x = 1; })';
  const file = Buffer.concat([elf, Buffer.from(bundle, 'latin1'), Buffer.from(String(elf.length).padStart(10, '0'))]);
  assert.equal(bundleOf(file), bundle);
  assert.equal(buildIdOf(bundle), createHash('sha256').update(bundle).digest('hex').slice(0, 16));
  assert.equal(bundleOf(Buffer.from('#!/usr/bin/env node\nconsole.log(1)\n')), undefined, 'a script-layout plugin has no trailer');
  assert.equal(bundleOf(Buffer.concat([elf, Buffer.from('9999999999')])), undefined, 'a trailer past the end');
  assert.equal(bundleOf(Buffer.from('short')), undefined);
});

/** Counts turns of the event loop (one check phase each) while `body` runs. */
async function countingTurns(body: (now: () => number) => Promise<void>): Promise<void> {
  let turn = 0;
  let running = true;
  const tick = (): void => {
    turn++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  try {
    await body(() => turn);
  } finally {
    running = false;
  }
}

test('calls that became ready together start one per turn of the event loop, in order', async () => {
  await countingTurns(async (now) => {
    const gate = new TurnGate();
    const started: [number, number][] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        await gate.turn();
        started.push([i, now()]);
      }),
    );
    assert.deepEqual(started.map(([i]) => i), Array.from({ length: 20 }, (_, i) => i), 'first come, first started');
    const turns = started.map(([, t]) => t);
    for (let i = 1; i < turns.length; i++) assert.ok(turns[i]! > turns[i - 1]!, `call ${i} started on a later turn than call ${i - 1} (${turns.join(',')})`);
  });
  // What the gate prevents: continuations that became ready together all run within one turn.
  await countingTurns(async (now) => {
    const turns = await Promise.all(Array.from({ length: 20 }, async () => (await Promise.resolve(), now())));
    assert.equal(new Set(turns).size, 1);
  });
});

test('a turn asked for later, or while another call runs, is still given', async () => {
  const gate = new TurnGate();
  await gate.turn();
  const inner: Promise<void>[] = [];
  await Promise.all([gate.turn().then(() => void inner.push(gate.turn())), gate.turn()]);
  await Promise.all(inner);
  await gate.turn();
});

test('the server keeps the most recently used builds, loads each once while kept, and keeps no failed load', () => {
  const loads: string[] = [];
  const cache = new RecentCache<string>(3);
  const get = (k: string) => cache.get(k, () => (loads.push(k), k === 'bad' ? undefined : `build ${k}`));
  assert.equal(get('a'), 'build a');
  assert.equal(get('a'), 'build a');
  get('b');
  get('c');
  assert.deepEqual(loads, ['a', 'b', 'c'], 'a build in the cache is not loaded again');
  get('a'); // now the most recent: b is the oldest
  get('d');
  assert.deepEqual(cache.keys(), ['c', 'a', 'd'], 'the least recently used went');
  assert.equal(get('bad'), undefined);
  assert.equal(get('bad'), undefined);
  assert.deepEqual(cache.keys(), ['c', 'a', 'd'], 'a failed load takes no place');
  get('b');
  assert.deepEqual(loads, ['a', 'b', 'c', 'd', 'bad', 'bad', 'b'], 'an evicted build is loaded again when named');
  cache.delete('a');
  assert.deepEqual(cache.keys(), ['d', 'b'], 'dropped on request');
});
