// The plain file calls on the CNI plugin's hot path (the IPAM's reservations, stdin, the answer, a sysctl
// read, a namespace file), made through flatnet's addon when it is loaded and through node:fs otherwise.
//
// Why not node:fs alone: every plugin call is a new Node process, and Node compiles each of its fs
// functions, with their validators and error helpers, the first time a process calls it. For the dozen
// an ADD uses that was about 1 ms of its ~7 ms above Node's own start (docs/benchmarks.md); the addon's
// calls (native/files.c) compile nothing. Both implementations give the same results and throw errors
// with the same `code` (ENOENT, EEXIST, ...), which is all callers look at; test/unit/files.test.ts holds
// them to one contract.
import { closeSync, constants, ftruncateSync, linkSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { loadAddon } from './native-addon.ts';

export interface FileCalls {
  /** The whole file, decoded as UTF-8. */
  readText(path: string): string;
  /** Everything until end of file (stdin), waiting when a non-blocking pipe has nothing yet. */
  readFd(fd: number): Buffer;
  /**
   * `exclusive`: creates the file with `mode`, or fails with EEXIST. Otherwise creates it or overwrites
   * it in place and cuts it to length (never O_TRUNC: see DiskStore.setLastReserved).
   */
  writeFile(path: string, text: string, mode: number, exclusive: boolean): void;
  /** All of `text`, waiting out EAGAIN on a non-blocking pipe. */
  writeFd(fd: number, text: string): void;
  link(existing: string, newPath: string): void;
  unlink(path: string): void;
  /** `mkdir -p`: `mode` for the directories it creates; an existing directory is fine. */
  makeDirs(path: string, mode: number): void;
  /** The names in a directory, without `.` and `..`. */
  listDir(path: string): string[];
  /** False when it is not a directory, does not exist or cannot be looked at. */
  isDirectory(path: string): boolean;
  openReadOnly(path: string): number;
  close(fd: number): void;
}

function waitBriefly(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
}

/** The errno name both implementations put on their errors ("ENOENT", "EEXIST", ...), if `e` has one. */
export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? (e as NodeJS.ErrnoException).code : undefined;
}

export const nodeFileCalls: FileCalls = {
  readText: (path) => readFileSync(path, 'utf8'),
  readFd(fd) {
    // Chunk by chunk, so that data read before an EAGAIN is kept (readFileSync would lose it on a retry).
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      let n: number;
      try {
        n = readSync(fd, chunk, 0, chunk.length, null);
      } catch (e) {
        if (errnoCode(e) !== 'EAGAIN') throw e;
        waitBriefly();
        continue;
      }
      if (n === 0) return Buffer.concat(chunks);
      chunks.push(chunk.subarray(0, n));
    }
  },
  writeFile(path, text, mode, exclusive) {
    const fd = openSync(path, exclusive ? 'wx' : constants.O_WRONLY | constants.O_CREAT, mode);
    try {
      const buf = Buffer.from(text, 'utf8');
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, off);
      if (!exclusive) ftruncateSync(fd, buf.length);
    } finally {
      closeSync(fd);
    }
  },
  writeFd(fd, text) {
    const buf = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < buf.length) {
      try {
        off += writeSync(fd, buf, off);
      } catch (e) {
        if (errnoCode(e) !== 'EAGAIN') throw e;
        waitBriefly();
      }
    }
  },
  link: (existing, newPath) => linkSync(existing, newPath),
  unlink: (path) => unlinkSync(path),
  makeDirs(path, mode) {
    mkdirSync(path, { recursive: true, mode });
  },
  listDir: (path) => readdirSync(path),
  isDirectory(path) {
    try {
      return statSync(path).isDirectory();
    } catch {
      return false;
    }
  },
  openReadOnly: (path) => openSync(path, 'r'),
  close: (fd) => closeSync(fd),
};

const NATIVE_FUNCTIONS = ['readText', 'readFd', 'writeFile', 'writeFd', 'link', 'unlink', 'makeDirs', 'listDir', 'isDirectory', 'openReadOnly', 'close'] as const;

/** The addon's file calls, if it has all of them (an addon built before them has none). */
export function nativeFileCalls(addon: unknown): FileCalls | undefined {
  const a = addon as Partial<Record<(typeof NATIVE_FUNCTIONS)[number], unknown>> | undefined;
  return a !== undefined && NATIVE_FUNCTIONS.every((f) => typeof a[f] === 'function') ? (a as unknown as FileCalls) : undefined;
}

let chosen: FileCalls | undefined;

/** The addon's calls when it is loaded (or can be), else node:fs; chosen once per process. */
export function fileCalls(): FileCalls {
  chosen ??= nativeFileCalls(loadAddon()) ?? nodeFileCalls;
  return chosen;
}

export const readText = (path: string): string => fileCalls().readText(path);
export const openReadOnly = (path: string): number => fileCalls().openReadOnly(path);
export const closeFile = (fd: number): void => fileCalls().close(fd);
