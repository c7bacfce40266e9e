// The plugin's file calls (src/linux/files.ts): node:fs and the addon's (native/files.c) held to one
// contract in a temp directory, no root. What callers rely on: the same results, and errors whose `code` is
// the errno's name (the IPAM tells EEXIST from ENOENT from everything else by it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, constants, fstatSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FileCalls } from '../../src/linux/files.ts';
import { IMPLEMENTATIONS } from '../tools/file-calls.ts';

function inTempDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fnt-files-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

function throwsCode(fn: () => unknown, code: string, path?: string): void {
  assert.throws(fn, (e: NodeJS.ErrnoException) => {
    assert.equal(e.code, code);
    if (path !== undefined) assert.ok(e.message.includes(path), `the message names the path: ${e.message}`);
    return true;
  });
}

for (const impl of IMPLEMENTATIONS) {
  const skip = impl.calls ? false : 'the addon is not built here';
  const f = impl.calls as FileCalls;
  const name = (what: string) => `${impl.name}: ${what}`;

  test(name('readText reads UTF-8 whole; a missing file is ENOENT naming it'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'r');
    const text = `pod-1\r\neth0 — ünïcode ${'x'.repeat(20_000)}`;
    writeFileSync(p, text);
    assert.equal(f.readText(p), text);
    writeFileSync(p, '');
    assert.equal(f.readText(p), '');
    throwsCode(() => f.readText(join(dir, 'absent')), 'ENOENT', join(dir, 'absent'));
  }));

  test(name('writeFile exclusive creates with the mode, or fails with EEXIST leaving the file alone'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'w');
    const old = process.umask(0o022);
    try {
      f.writeFile(p, 'first\r\neth0', 0o600, true);
    } finally {
      process.umask(old);
    }
    assert.equal(readFileSync(p, 'utf8'), 'first\r\neth0');
    assert.equal(statSync(p).mode & 0o777, 0o600);
    throwsCode(() => f.writeFile(p, 'second', 0o600, true), 'EEXIST', p);
    assert.equal(readFileSync(p, 'utf8'), 'first\r\neth0');
    throwsCode(() => f.writeFile(join(dir, 'no', 'such'), 'x', 0o600, true), 'ENOENT');
  }));

  test(name('writeFile in place creates, overwrites and cuts to length, keeping the inode'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'cursor');
    f.writeFile(p, 'fd10:244:0:1::1234', 0o600, false);
    const inode = statSync(p).ino;
    f.writeFile(p, '10.244.0.9', 0o600, false);
    assert.equal(readFileSync(p, 'utf8'), '10.244.0.9');
    assert.equal(statSync(p).ino, inode, 'overwritten, not replaced');
    f.writeFile(p, 'ü', 0o600, false);
    assert.deepEqual([...readFileSync(p)], [0xc3, 0xbc], 'cut to the UTF-8 length, not the string length');
  }));

  test(name('link makes a second name for the same file; an existing name is EEXIST'), { skip }, inTempDir((dir) => {
    const a = join(dir, 'tmp');
    const b = join(dir, '10.1.0.2');
    writeFileSync(a, 'x');
    f.link(a, b);
    assert.equal(statSync(a).ino, statSync(b).ino);
    assert.equal(statSync(a).nlink, 2);
    throwsCode(() => f.link(a, b), 'EEXIST', b);
    throwsCode(() => f.link(join(dir, 'absent'), join(dir, 'c')), 'ENOENT');
  }));

  test(name('unlink removes; a missing file is ENOENT; a directory is refused'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'u');
    writeFileSync(p, 'x');
    f.unlink(p);
    assert.deepEqual(readdirSync(dir), []);
    throwsCode(() => f.unlink(p), 'ENOENT', p);
    f.makeDirs(join(dir, 'd'), 0o700);
    assert.throws(() => f.unlink(join(dir, 'd')), (e: NodeJS.ErrnoException) => e.code === 'EISDIR' || e.code === 'EPERM');
  }));

  test(name('makeDirs is mkdir -p: nested, idempotent, EEXIST on a file, ENOTDIR under one'), { skip }, inTempDir((dir) => {
    const deep = join(dir, 'a', 'b', 'c');
    f.makeDirs(deep, 0o700);
    assert.ok(statSync(deep).isDirectory());
    assert.equal(statSync(deep).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'a')).mode & 0o777, 0o700);
    f.makeDirs(deep, 0o700);
    f.makeDirs(`${deep}/`, 0o700);
    writeFileSync(join(dir, 'file'), 'x');
    throwsCode(() => f.makeDirs(join(dir, 'file'), 0o700), 'EEXIST');
    throwsCode(() => f.makeDirs(join(dir, 'file', 'sub', 'deeper'), 0o700), 'ENOTDIR');
  }));

  test(name('listDir lists every name but . and ..; a missing directory is ENOENT'), { skip }, inTempDir((dir) => {
    const names = ['10.1.0.2', '.flatnet-owner-0123456789abcdef-10.1.0.2', 'last_reserved_ip.0', 'fd00::7', 'ünï'];
    for (const n of names) writeFileSync(join(dir, n), 'x');
    f.makeDirs(join(dir, 'sub'), 0o700);
    assert.deepEqual(f.listDir(dir).sort(), [...names, 'sub'].sort());
    assert.deepEqual(f.listDir(join(dir, 'sub')), []);
    throwsCode(() => f.listDir(join(dir, 'absent')), 'ENOENT', join(dir, 'absent'));
  }));

  test(name('isDirectory: true for a directory only'), { skip }, inTempDir((dir) => {
    writeFileSync(join(dir, 'file'), 'x');
    assert.equal(f.isDirectory(dir), true);
    assert.equal(f.isDirectory(join(dir, 'file')), false);
    assert.equal(f.isDirectory(join(dir, 'absent')), false);
  }));

  test(name('openReadOnly gives a descriptor of the file; close closes it'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'ns');
    writeFileSync(p, 'x');
    const fd = f.openReadOnly(p);
    assert.equal(fstatSync(fd).ino, statSync(p).ino);
    f.close(fd);
    assert.throws(() => fstatSync(fd), { code: 'EBADF' });
    throwsCode(() => f.openReadOnly(join(dir, 'absent')), 'ENOENT', join(dir, 'absent'));
  }));

  test(name('a path with a NUL byte is refused before any system call'), { skip }, inTempDir((dir) => {
    const bad = join(dir, 'a\0b');
    assert.throws(() => f.writeFile(bad, 'x', 0o600, true), { code: 'ERR_INVALID_ARG_VALUE' });
    assert.throws(() => f.makeDirs(bad, 0o700), { code: 'ERR_INVALID_ARG_VALUE' });
    assert.deepEqual(readdirSync(dir), [], 'nothing was created under the shortened name');
  }));

  test(name('readFd reads to the end, waiting on a non-blocking pipe until the writer has written'), { skip }, inTempDir(async (dir) => {
    const fifo = join(dir, 'stdin');
    const mk = spawn('mkfifo', [fifo]);
    assert.equal((await once(mk, 'exit'))[0], 0);
    // Opened non-blocking, as a runtime may hand stdin over: reads see EAGAIN until the writer writes.
    const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const writer = spawn('sh', ['-c', `exec 3>"$1"; echo open; sleep 0.3; printf '{"cniVersion":"1.1.0"}' >&3`, 'sh', fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
      await once(writer.stdout, 'data'); // it holds the write end: an empty read now means "not yet", not the end
      assert.equal(f.readFd(fd).toString('utf8'), '{"cniVersion":"1.1.0"}');
      await once(writer, 'exit');
    } finally {
      closeSync(fd);
    }
  }));

  test(name('writeFd writes all of a long text'), { skip }, inTempDir((dir) => {
    const p = join(dir, 'out');
    const fd = openSync(p, 'w');
    const text = `{"ips":[${'"10.244.0.2",'.repeat(20_000)}"ü"]}\n`;
    try {
      f.writeFd(fd, text);
    } finally {
      closeSync(fd);
    }
    assert.equal(readFileSync(p, 'utf8'), text);
  }));
}
