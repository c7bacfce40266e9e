// The plugin executable's two layouts (scripts/cni-plugin.mjs): the native launcher (native/launcher.c
// followed by the bundle) that the build writes on x86-64, and the script launcher other machines get.
// Both are built here into temp dirs and driven as a runtime drives them: same answers, real ADD/DEL in
// throwaway namespaces, NODE_EXTRA_CA_CERTS really dropped, the code cache saved beside the real file.
// The native one's own failure modes (no node on PATH, no /proc) answer with CNI error JSON. The netlink
// addon's two functions for the loader (mapFile, readBundle) are checked against plain reads, and a plugin
// copied without its addon still runs (plain reads, iproute2 and nft).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { run, runOk } from '../../src/linux/run.ts';
import { ErrorCode } from '../../src/cni/errors.ts';
import { PLUGIN_DIR, callPlugin, netnsPath } from '../tools/cni.ts';
import { Scratch } from '../tools/netns.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const layouts = ['native', 'script'] as const;

describe('the plugin executable: native and script launchers', () => {
  const s = new Scratch();
  let node = '';
  const plugin: Record<(typeof layouts)[number], string> = { native: '', script: '' };
  const conf = { cniVersion: '1.1.0', name: 'fnt-launch', type: 'flatnet', bridge: 'fntl0', ipam: { ranges: [[{ subnet: '10.97.12.0/24' }]], dataDir: '' } };

  before(async () => {
    node = await s.netns('node');
    conf.ipam.dataDir = s.tempDir('ipam');
    for (const layout of layouts) {
      const dir = s.tempDir(layout);
      plugin[layout] = join(dir, 'flatnet');
      await runOk([process.execPath, join(ROOT, 'scripts/cni-plugin.mjs'), plugin[layout], layout]);
      copyFileSync(join(PLUGIN_DIR, 'flatnet-netlink.node'), join(dir, 'flatnet-netlink.node'));
    }
  });
  after(() => s.cleanup());

  test('each layout is what it says: an ELF program or a script', () => {
    assert.deepEqual([...readFileSync(plugin.native).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.match(readFileSync(plugin.script, 'latin1').split('\n')[0]!, /^#!\/usr\/bin\/env -S -u NODE_EXTRA_CA_CERTS node$/);
  });

  for (const layout of layouts) {
    test(`${layout}: VERSION, bad input, ADD and DEL answer as the plugin does; NODE_EXTRA_CA_CERTS never reaches Node`, async () => {
      // Node warns on stderr when it cannot load the extra certificates: its silence proves the variable was dropped.
      const env = { NODE_EXTRA_CA_CERTS: '/nonexistent/flatnet-test-ca.pem' };
      const ver = await callPlugin({ node, command: 'VERSION', config: {}, plugin: plugin[layout], env });
      assert.equal(ver.code, 0, ver.stdout + ver.stderr);
      assert.deepEqual(ver.json?.['supportedVersions'], ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
      assert.doesNotMatch(ver.stderr, /extra certs/i);
      const bad = await callPlugin({ node, command: 'ADD', config: { ...conf, mtu: 'big' }, containerID: `l-${layout}-bad`, netns: netnsPath(node), plugin: plugin[layout] });
      assert.equal(bad.code, 1);
      assert.equal(bad.json?.['code'], ErrorCode.InvalidConfig, bad.stdout);
      assert.match(String(bad.json?.['msg']), /mtu/);

      const pod = await s.netns(`p-${layout}`);
      const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: `l-${layout}`, netns: netnsPath(pod), plugin: plugin[layout], env });
      assert.equal(add.code, 0, add.stdout + add.stderr);
      assert.doesNotMatch(add.stderr, /extra certs/i);
      assert.match((add.json?.['ips'] as { address: string }[])[0]!.address, /^10\.97\.12\.\d+\/24$/);
      const del = await callPlugin({ node, command: 'DEL', config: conf, containerID: `l-${layout}`, netns: netnsPath(pod), plugin: plugin[layout] });
      assert.equal(del.code, 0, del.stdout + del.stderr);
      const caches = readdirSync(dirname(plugin[layout])).filter((f) => f.endsWith('.cache')).map((f) => f.replace(/^\.flatnet-[0-9a-f]{16}\./, ''));
      assert.deepEqual(caches.sort(), ['add.cache', 'full.cache'], 'the code cache is saved beside the plugin');
    });
  }

  test('native: called through a symlink it still finds itself, and its cache stays beside the real file', async () => {
    const links = s.tempDir('links');
    symlinkSync(plugin.native, join(links, 'flatnet'));
    const r = await callPlugin({ node, command: 'VERSION', config: {}, plugin: join(links, 'flatnet') });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(readdirSync(links), ['flatnet']);
  });

  test('native: a plugin file replaced while it starts still runs the bundle that was exec\'d', async () => {
    // An upgrade renames a new file over the plugin. Here a `node` on PATH does that (with garbage) right
    // before starting the real node, the worst moment: reading the bundle by path would now read garbage.
    const dir = s.tempDir('replaced');
    const target = join(dir, 'flatnet');
    copyFileSync(plugin.native, target);
    writeFileSync(join(dir, 'garbage'), 'not a plugin\n', { mode: 0o755 });
    const bin = s.tempDir('renaming-node');
    writeFileSync(join(bin, 'node'), `#!/bin/sh\nmv -f '${join(dir, 'garbage')}' '${target}'\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
    const r = await callPlugin({ node, command: 'VERSION', config: {}, plugin: target, env: { PATH: `${bin}:/usr/bin:/bin` } });
    assert.equal(readFileSync(target, 'utf8'), 'not a plugin\n', 'the file was replaced before Node read anything');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.json?.['supportedVersions'], ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  test('native: no node on PATH, or no way to find its own file, is a CNI error JSON, not silence', async () => {
    const empty = s.tempDir('empty-bin');
    const noNode = await callPlugin({ node, command: 'VERSION', config: {}, plugin: plugin.native, env: { PATH: empty } });
    assert.equal(noNode.code, 1);
    assert.equal(noNode.json?.['code'], ErrorCode.LauncherFailed, noNode.stdout);
    assert.match(String(noNode.json?.['msg']), /cannot start node/);
    assert.match(noNode.stderr, /cannot start node/);
    // Only node on PATH (a symlink to it), as a runtime with a minimal PATH would have: found.
    const bin = s.tempDir('node-bin');
    symlinkSync(process.execPath, join(bin, 'node'));
    const found = await callPlugin({ node, command: 'VERSION', config: {}, plugin: plugin.native, env: { PATH: bin } });
    assert.equal(found.code, 0, found.stdout + found.stderr);

    // Without /proc (a private mount namespace with it unmounted), an absolute argv[0] still works and a
    // relative one cannot be trusted.
    const noProc = (argv0: string) =>
      run(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'umount -l /proc && cd "$1" && exec env -i PATH=/usr/bin:/bin CNI_COMMAND=VERSION "$2"', 'sh', dirname(plugin.native), argv0]);
    const abs = await noProc(plugin.native);
    assert.equal(abs.code, 0, abs.stdout + abs.stderr);
    assert.match(abs.stdout, /supportedVersions/);
    const rel = await noProc('./flatnet');
    assert.equal(rel.code, 1);
    assert.equal((JSON.parse(rel.stdout) as { code: number }).code, ErrorCode.LauncherFailed);
    assert.match(rel.stdout, /cannot find its own file/);
  });
  test('the addon hands the loader its code: mapFile gives a file\'s bytes, readBundle the native bundle', () => {
    const m = { exports: {} as Record<string, (...a: unknown[]) => unknown> };
    process.dlopen(m, join(PLUGIN_DIR, 'flatnet-netlink.node'));
    const { mapFile, readBundle } = m.exports as { mapFile: (p: string) => Uint8Array; readBundle: (fd: number) => string };
    const codeOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
      return 'no error';
    };

    // A code cache the first test's ADD and DEL saved beside the native plugin.
    const dir = dirname(plugin.native);
    const cache = readdirSync(dir).find((f) => f.endsWith('.full.cache'));
    assert.ok(cache, 'a full code cache beside the native plugin');
    assert.deepEqual(Buffer.from(mapFile(join(dir, cache))), readFileSync(join(dir, cache)));
    assert.equal(codeOf(() => mapFile(join(dir, 'no-such.cache'))), 'ENOENT', 'the loader tells "not written yet" by ENOENT');
    assert.equal(codeOf(() => mapFile(dir)), 'EINVAL', 'a directory is not mapped');
    const empty = join(s.tempDir('map'), 'empty');
    writeFileSync(empty, '');
    assert.equal(codeOf(() => mapFile(empty)), 'EINVAL', 'an empty file is not mapped');

    // The bundle as the plain read takes it out: from the offset in the 10-digit trailer up to the trailer.
    const bytes = readFileSync(plugin.native);
    const end = bytes.length - 10;
    const want = bytes.toString('latin1', Number(bytes.toString('latin1', end)), end);
    assert.match(want, /^\(function \(exports, require, module, __filename, __dirname\) \{/);
    const fd = openSync(plugin.native, 'r');
    try {
      assert.equal(readBundle(fd), want);
    } finally {
      closeSync(fd);
    }
    // A file without the trailer (the script layout) is refused, not misread.
    const sfd = openSync(plugin.script, 'r');
    try {
      assert.equal(codeOf(() => readBundle(sfd)), 'EINVAL');
    } finally {
      closeSync(sfd);
    }
  });

  for (const layout of layouts) {
    test(`${layout}: copied without its netlink addon, it reads its code plainly and changes the kernel through iproute2`, async () => {
      const dir = s.tempDir(`${layout}-alone`);
      mkdirSync(dir, { recursive: true });
      const alone = join(dir, 'flatnet');
      copyFileSync(plugin[layout], alone);
      const pod = await s.netns(`a-${layout}`);
      const id = `l-${layout}-alone`;
      for (const round of [1, 2]) {
        // The second round runs with the code cache the first one saved, read without the addon.
        const add = await callPlugin({ node, command: 'ADD', config: conf, containerID: id, netns: netnsPath(pod), plugin: alone });
        assert.equal(add.code, 0, `round ${round}: ${add.stdout}${add.stderr}`);
        assert.match((add.json?.['ips'] as { address: string }[])[0]!.address, /^10\.97\.12\.\d+\/24$/);
        const del = await callPlugin({ node, command: 'DEL', config: conf, containerID: id, netns: netnsPath(pod), plugin: alone });
        assert.equal(del.code, 0, `round ${round}: ${del.stdout}${del.stderr}`);
      }
      assert.equal(readdirSync(dir).filter((f) => f.endsWith('.cache')).length, 2, 'both code caches saved, and read back');
      const links = JSON.parse((await runOk(['ip', '-n', pod, '-j', 'link', 'show'])).stdout) as { ifname: string }[];
      assert.deepEqual(links.map((l) => l.ifname), ['lo'], 'DEL removed the pod interface');
      // And it had no netlink: with node as the only command on PATH, the ADD fails for want of `ip`.
      const bin = s.tempDir(`${layout}-only-node`);
      symlinkSync(process.execPath, join(bin, 'node'));
      const noTools = await callPlugin({ node, command: 'ADD', config: conf, containerID: `${id}-2`, netns: netnsPath(pod), plugin: alone, env: { PATH: bin } });
      assert.equal(noTools.code, 1, noTools.stdout);
      assert.match(String(noTools.json?.['msg']) + String(noTools.json?.['details']), /\bip\b/);
    });
  }
});
