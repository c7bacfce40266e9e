// The reservation store on disk, in host-local's format so a node moving from bridge+host-local never
// double-allocates: <dataDir>/<network>/<ip> holds "<containerID>\r\n<ifname>", and
// last_reserved_ip.<set> holds the round-robin cursor.
//
// How a reservation is made atomic without a lock: the content is written to a private temp file first,
// then hard-linked to the address's name. link(2) fails with EEXIST if the name exists, so exactly one of
// any number of racing processes wins, and the winner's file is complete from the first instant anyone can
// see it. A process killed before the link leaves only a temp file (".flatnet-tmp-*", reclaimed by GC); one
// killed after it leaves a complete reservation that DEL or GC of its attachment releases. There is no lock
// file, so nothing a crash leaves behind can block the node. (host-local's own flock is not taken: a
// host-local running concurrently still cannot collide with us, since both create addresses exclusively.)
//
// Owner index: beside each reservation we link the same file as `.flatnet-owner-<hash of owner>-<ip>`, so
// that ADD's duplicate check and DEL find an attachment's addresses from one directory listing instead of
// reading every reservation file (a node with 100 pods would read 100 files per ADD and per DEL). The
// index is only a hint: every candidate's content is still read and compared, and a reservation without an
// index (host-local's, or one whose plugin died between the two links) is read like before.
import { join } from 'node:path';
import { type FileCalls, errnoCode as code, fileCalls } from '../linux/files.ts';
import { fnv1a64 } from '../net/hash.ts';
import { canonicalIPText } from '../net/ip.ts';
import { type Owner, type Reservation, type ReservationStore, sameOwner } from './allocator.ts';

let counter = 0;
/** A name part no other process (pid) or call (counter) uses; no node:crypto on the plugin's start-up path. */
function uniqueSuffix(): string {
  counter += 1;
  return `${counter}-${Math.floor(Math.random() * 0xffffffff).toString(16)}`;
}

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';
const TMP_PREFIX = '.flatnet-tmp-';
const INDEX_PREFIX = '.flatnet-owner-';
const LAST_RESERVED = 'last_reserved_ip.';
const LINE_BREAK = '\r\n';

export class StoreIOError extends Error {
  override readonly name = 'StoreIOError';
}

/** Parses a reservation file's content; host-local's legacy files hold only the container ID. */
export function parseOwner(content: string): Owner {
  const [id = '', ifname = ''] = content.split(/\r?\n/);
  return { containerID: id.trim(), ifname: ifname.trim() };
}

export function ownsReservation(file: Owner, owner: Owner): boolean {
  // A legacy file (no ifname) belongs to every interface of its container, as host-local treats it.
  return file.containerID === owner.containerID && (file.ifname === '' || file.ifname === owner.ifname);
}

function ownerKey(o: Owner): string {
  return fnv1a64(`${o.containerID}\n${o.ifname}`).toString(16).padStart(16, '0');
}

/** The index entry's name for `ip` held by `o` (host-local's legacy id-only owners get none). */
export function indexName(o: Owner, ip: string): string | undefined {
  return o.ifname === '' ? undefined : `${INDEX_PREFIX}${ownerKey(o)}-${ip}`;
}

/** Parses an index entry's name into (owner key, ip). */
function parseIndexName(name: string): { key: string; ip: string } | undefined {
  if (!name.startsWith(INDEX_PREFIX)) return undefined;
  const rest = name.slice(INDEX_PREFIX.length);
  const key = rest.slice(0, 16);
  const ip = rest.slice(17);
  // The address part is not parsed: a candidate counts only if a reservation file of that name exists.
  return rest[16] === '-' && /^[0-9a-f]{16}$/.test(key) && ip !== '' ? { key, ip } : undefined;
}

export class DiskStore implements ReservationStore {
  readonly dir: string;
  private readonly fs: FileCalls;

  /** `fs`: the file calls to use (the addon's when loaded, else node:fs; see src/linux/files.ts). */
  constructor(dataDir: string, network: string, fs: FileCalls = fileCalls()) {
    this.dir = join(dataDir, network);
    this.fs = fs;
  }

  /** Creates the network's directory (0700: reservations are root's business). */
  ensureDir(): void {
    try {
      this.fs.makeDirs(this.dir, 0o700);
    } catch (e) {
      throw new StoreIOError(`cannot create IPAM directory ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
    }
  }

  tryReserve(ip: string, owner: Owner): boolean {
    const tmp = join(this.dir, `${TMP_PREFIX}${process.pid}-${uniqueSuffix()}`);
    try {
      this.fs.writeFile(tmp, `${owner.containerID}${LINE_BREAK}${owner.ifname}`, 0o600, true);
      try {
        this.fs.link(tmp, join(this.dir, ip));
      } catch (e) {
        if (code(e) === 'EEXIST') return false;
        throw e;
      }
      const index = indexName(owner, ip);
      try {
        if (index !== undefined) this.fs.link(tmp, join(this.dir, index));
      } catch (e) {
        // Left by a killed DEL of this same owner and address: it already says what we would.
        if (code(e) !== 'EEXIST') throw e;
      }
      return true;
    } catch (e) {
      throw new StoreIOError(`cannot write reservation for ${ip} in ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
    } finally {
      try {
        this.fs.unlink(tmp);
      } catch {
        /* never created, or already gone */
      }
    }
  }

  release(ip: string, owner: Owner): void {
    const content = this.read(join(this.dir, ip));
    if (content === undefined) return;
    const holder = parseOwner(content);
    if (ownsReservation(holder, owner)) this.remove(ip, holder);
  }

  /** The reservations held by exactly `owner` (ADD's duplicate check), from the index plus unindexed files. */
  heldBy(owner: Owner): Reservation[] {
    return this.candidateHolders(owner).filter((r) => sameOwner(r.owner, owner));
  }

  /** Releases every reservation of `owner` (DEL), legacy id-only files included; returns the addresses. */
  releaseOwner(owner: Owner): string[] {
    const mine = this.candidateHolders(owner).filter((r) => ownsReservation(r.owner, owner));
    for (const r of mine) this.remove(r.ip, r.owner);
    return mine.map((r) => r.ip);
  }

  /** The candidates' reservations as they are on disk (a candidate released meanwhile is skipped). */
  private candidateHolders(owner: Owner): Reservation[] {
    const out: Reservation[] = [];
    for (const ip of this.candidates(owner)) {
      const content = this.read(join(this.dir, ip));
      if (content !== undefined) out.push({ ip, owner: parseOwner(content) });
    }
    return out;
  }

  /**
   * Addresses that may belong to `owner`: those its index names, and every reservation that has no index
   * entry at all. One directory listing; files are read only for these.
   */
  private candidates(owner: Owner): string[] {
    const names = this.names();
    const key = ownerKey(owner);
    const present = new Set(names);
    const indexed = new Set<string>();
    const mine = new Set<string>();
    for (const name of names) {
      const idx = parseIndexName(name);
      if (!idx) continue;
      indexed.add(idx.ip);
      if (idx.key === key && present.has(idx.ip)) mine.add(idx.ip);
    }
    // Addresses are parsed only for files no index entry names (host-local's, a killed plugin's, cursors).
    for (const name of names) {
      if (!name.startsWith('.') && !indexed.has(name) && canonicalIPText(name) !== undefined) mine.add(name);
    }
    return [...mine];
  }

  /** Removes a reservation, then its index entry (an index without its reservation is ignored and GC'd). */
  private remove(ip: string, holder: Owner): void {
    this.unlink(ip);
    const index = indexName(holder, ip);
    if (index !== undefined) this.unlink(index);
  }

  private unlink(ip: string): void {
    try {
      this.fs.unlink(join(this.dir, ip));
    } catch (e) {
      if (code(e) !== 'ENOENT') throw new StoreIOError(`cannot release ${ip} in ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
    }
  }

  /** Every reservation file (named by a valid IP); other files (lock, cursors, temp files) are skipped. */
  list(): Reservation[] {
    const out: Reservation[] = [];
    for (const name of this.names()) {
      if (canonicalIPText(name) === undefined) continue;
      const content = this.read(join(this.dir, name));
      if (content !== undefined) out.push({ ip: name, owner: parseOwner(content) });
    }
    return out;
  }

  lastReserved(setIndex: number): string | undefined {
    return this.read(join(this.dir, `${LAST_RESERVED}${setIndex}`))?.trim();
  }

  setLastReserved(setIndex: number, ip: string): void {
    // Written in place, as host-local does: the cursor is only a hint (an unparseable one starts the walk
    // from the range's start), so a torn write costs nothing, and a temp file plus rename would cost every
    // ADD a second file creation. Overwritten, then cut to length, rather than opened with O_TRUNC: on
    // ext4, truncating a file to zero and writing it again makes close() start writeback of the file
    // (auto_da_alloc, the replace-via-truncate heuristic): 230-370 us per ADD here against ~16 us.
    try {
      this.fs.writeFile(join(this.dir, `${LAST_RESERVED}${setIndex}`), ip, 0o600, false);
    } catch {
      /* a hint we could not write: the next ADD starts its walk elsewhere, still correct */
    }
  }

  /**
   * Tidies what killed processes can leave (GC only: it never runs concurrently with ADD/DEL): removes
   * temp files and index entries whose reservation is gone or now held by someone else, and adds the
   * entry a reservation lacks (its plugin died between the two links). Returns how many files it changed.
   */
  tidy(): number {
    let n = 0;
    const names = this.names();
    const present = new Set(names);
    for (const name of names) {
      const idx = parseIndexName(name);
      let stale = name.startsWith(TMP_PREFIX);
      if (idx) {
        const content = this.read(join(this.dir, idx.ip));
        stale = content === undefined || ownerKey(parseOwner(content)) !== idx.key;
      }
      if (!stale) continue;
      this.removeIfPresent(name);
      n++;
    }
    for (const r of this.list()) {
      const index = indexName(r.owner, r.ip);
      if (index === undefined || present.has(index)) continue;
      try {
        this.fs.link(join(this.dir, r.ip), join(this.dir, index));
        n++;
      } catch (e) {
        if (code(e) !== 'EEXIST') throw new StoreIOError(`cannot index ${r.ip} in ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
      }
    }
    return n;
  }

  /** Checks that the directory exists (or can be created) and is writable: for STATUS. */
  checkWritable(): void {
    this.ensureDir();
    const probe = `${TMP_PREFIX}${process.pid}-probe`;
    try {
      this.fs.writeFile(join(this.dir, probe), 'x', 0o600, false);
    } catch (e) {
      throw new StoreIOError(`IPAM directory ${this.dir} is not writable: ${code(e) ?? String(e)}`, { cause: e });
    }
    this.removeIfPresent(probe);
  }

  exists(): boolean {
    return this.fs.isDirectory(this.dir);
  }

  /** Removes a file of this directory that may already be gone (GC's tidying, STATUS's probe). */
  private removeIfPresent(name: string): void {
    try {
      this.fs.unlink(join(this.dir, name));
    } catch (e) {
      if (code(e) !== 'ENOENT') throw new StoreIOError(`cannot remove ${name} in ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
    }
  }

  private names(): string[] {
    try {
      return this.fs.listDir(this.dir);
    } catch (e) {
      if (code(e) === 'ENOENT') return [];
      throw new StoreIOError(`cannot read IPAM directory ${this.dir}: ${code(e) ?? String(e)}`, { cause: e });
    }
  }

  private read(path: string): string | undefined {
    try {
      return this.fs.readText(path);
    } catch (e) {
      if (code(e) === 'ENOENT') return undefined;
      throw new StoreIOError(`cannot read ${path}: ${code(e) ?? String(e)}`, { cause: e });
    }
  }
}
