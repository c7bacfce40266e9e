// EmbeddedStore: the lease store as files in one directory, for agents that share a machine (the
// lab) and need no server.
//
// How it works. Every subnet is a chain of immutable claim files `claims/<ip>_<len>@<gen>`; the
// file with the highest generation says who holds the subnet, until when, and the holder's whole
// lease. Every change to a subnet -- first claim, renewal, takeover after expiry, release -- is
// the creation of generation max+1, written to tmp/ and then hard-linked into claims/. link(2)
// fails with EEXIST if the name exists, so of any number of writers that read the same max, one
// wins and the rest re-read and try again: a compare-and-swap with no lock. A writer checks after
// its link that no higher generation exists (a writer that read a stale max may create a lower
// generation whose file had been cleaned up; that claim is void and it removes it). A winner
// removes generations below max-1; the newest two always stay, so a concurrent readdir sees at
// least one of them.
//
// Why this survives SIGKILL at any instant: there is no lock to leave behind, the claim file is
// complete before it gets its name (tmp + fsync + link), and a half-finished acquire leaves only
// claims that name the dead process's node, which expire like any lease (and that node gets them
// back when it restarts). Stray tmp files name nothing and are swept after an hour.
//
// Costs: an acquire or renew reads the directory plus one file per subnet in use and writes one
// file per family; renewing every few seconds keeps two files per subnet. Fine for tens of nodes
// on one machine; this is not a cluster-wide store (the directory is local).

import { randomBytes } from 'node:crypto';
import { watch as fsWatch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { link, mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { formatPrefix, tryParsePrefix } from '../net/ip.ts';
import { assertAcquirable, chooseSubnets, rejectConflicts, validateLease } from './subnets.ts';
import type { SubnetClaim } from './subnets.ts';
import {
  DEFAULT_REUSE_GRACE_MS,
  LeaseLostError,
  LeaseRequestError,
  StoreUnavailableError,
} from './types.ts';
import type {
  AcquireRequest,
  ClusterNetwork,
  LeaseStore,
  NodeAttrs,
  NodeLease,
  StoreOptions,
  Watch,
} from './types.ts';

export interface EmbeddedStoreOptions extends StoreOptions {
  /** Directory holding the store; created 0700 if missing. */
  readonly dir?: string;
}

export const DEFAULT_EMBEDDED_DIR = '/var/lib/flatnet/store';

/** Contents of one claim file. A released subnet keeps a claim with lease null until the grace passes. */
interface ClaimRecord {
  readonly subnet: string;
  readonly gen: number;
  /** The holder's lease expiry, or the release time. */
  readonly heldUntil: number;
  /** When the current holder first took the subnet (orders conflicting leases: older wins). */
  readonly since: number;
  readonly lease: NodeLease | null;
}

interface ChainHead {
  readonly subnet: string;
  readonly gen: number;
  /** undefined when the head file is malformed: the subnet then stays blocked until someone fixes it. */
  readonly record: ClaimRecord | undefined;
}

const CLAIM_NAME = /^([0-9a-f.:]+)_([0-9]{1,3})@(0|[1-9][0-9]{0,14})$/;
const MAX_ATTEMPTS = 200;
const STALE_TMP_MS = 3_600_000;

function claimName(subnet: string, gen: number): string {
  return `${subnet.replace('/', '_')}@${gen}`;
}

function errCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? (e as { code?: string }).code : undefined;
}

/** Errors the file system gives when the store itself is unusable (not there, not ours, full). */
function wrapFsError(what: string, e: unknown): Error {
  const code = errCode(e);
  if (code === 'ENOSPC' || code === 'EIO' || code === 'EMFILE' || code === 'ENFILE' || code === 'EAGAIN') {
    return new StoreUnavailableError(`embedded store: ${what}: ${code}`, { cause: e });
  }
  return new Error(`embedded store: ${what}`, { cause: e });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function newestRecord(records: readonly ClaimRecord[]): ClaimRecord {
  return records.reduce((a, b) => (b.heldUntil > a.heldUntil ? b : a));
}

/** One node's held subnets, in the order of its newest lease record (then any it does not list). */
function subnetsInLeaseOrder(records: readonly ClaimRecord[]): string[] {
  if (records.length === 0) return [];
  const owned = new Set(records.map((r) => r.subnet));
  const ordered = (newestRecord(records).lease?.podCIDRs ?? []).filter((c) => owned.has(c));
  for (const r of records) if (!ordered.includes(r.subnet)) ordered.push(r.subnet);
  return ordered;
}

export class EmbeddedStore implements LeaseStore {
  readonly dir: string;
  private readonly claimsDir: string;
  private readonly tmpDir: string;
  private readonly grace: number;
  private readonly now: () => number;
  private readonly onInvalid: (key: string, reason: string) => void;
  private network: ClusterNetwork | undefined;
  private ready: Promise<void> | undefined;
  private readonly watchers = new Set<FSWatcher>();
  /** Subnets this instance acquired per node, so renew notices a family that was taken away. */
  private readonly held = new Map<string, readonly string[]>();

  constructor(opts: EmbeddedStoreOptions = {}) {
    this.dir = opts.dir ?? DEFAULT_EMBEDDED_DIR;
    this.claimsDir = join(this.dir, 'claims');
    this.tmpDir = join(this.dir, 'tmp');
    this.grace = opts.reuseGraceMs ?? DEFAULT_REUSE_GRACE_MS;
    this.now = opts.now ?? Date.now;
    this.onInvalid = opts.onInvalid ?? (() => undefined);
    this.network = opts.network;
  }

  private ensureDirs(): Promise<void> {
    this.ready ??= (async () => {
      try {
        await mkdir(this.claimsDir, { recursive: true, mode: 0o700 });
        await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
      } catch (e) {
        this.ready = undefined;
        throw wrapFsError(`cannot create ${this.dir}`, e);
      }
      await this.sweepTmp();
    })();
    return this.ready;
  }

  private async sweepTmp(): Promise<void> {
    const names = await readdir(this.tmpDir).catch(() => [] as string[]);
    const cutoff = Date.now() - STALE_TMP_MS;
    for (const n of names) {
      const p = join(this.tmpDir, n);
      const st = await stat(p).catch(() => undefined);
      if (st && st.mtimeMs < cutoff) await unlink(p).catch(() => undefined);
    }
  }

  /** The newest claim of every subnet. Retries when a head vanished under it (two newer generations appeared). */
  private async readHeads(): Promise<Map<string, ChainHead>> {
    await this.ensureDirs();
    for (let attempt = 0; ; attempt++) {
      let names: string[];
      try {
        names = await readdir(this.claimsDir);
      } catch (e) {
        throw wrapFsError(`cannot read ${this.claimsDir}`, e);
      }
      const gens = new Map<string, number[]>();
      for (const n of names) {
        const m = CLAIM_NAME.exec(n);
        const p = m ? tryParsePrefix(`${m[1]}/${m[2]}`) : undefined;
        if (!m || !p || formatPrefix(p) !== `${m[1]}/${m[2]}`) {
          this.onInvalid(join(this.claimsDir, n), 'not a claim file name (<canonical subnet ip>_<length>@<generation>)');
          continue;
        }
        const subnet = formatPrefix(p);
        const list = gens.get(subnet) ?? [];
        list.push(Number(m[3]));
        gens.set(subnet, list);
      }
      const heads = new Map<string, ChainHead>();
      let vanished = false;
      await Promise.all(
        [...gens].map(async ([subnet, list]) => {
          list.sort((a, b) => a - b);
          const gen = list[list.length - 1] ?? 0;
          const file = join(this.claimsDir, claimName(subnet, gen));
          let text: string;
          try {
            text = await readFile(file, 'utf8');
          } catch (e) {
            if (errCode(e) === 'ENOENT') {
              vanished = true;
              return;
            }
            throw wrapFsError(`cannot read ${file}`, e);
          }
          const { record, reason } = parseRecord(text, subnet, gen);
          if (reason !== undefined) this.onInvalid(file, reason);
          heads.set(subnet, { subnet, gen, record });
        }),
      );
      if (!vanished || attempt >= 5) return heads;
    }
  }

  /** Creates generation prevGen+1 of the subnet's chain; false when another writer got there first. */
  private async casClaim(record: ClaimRecord): Promise<boolean> {
    const tmp = join(this.tmpDir, `${process.pid}.${randomBytes(6).toString('hex')}`);
    const target = join(this.claimsDir, claimName(record.subnet, record.gen));
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(JSON.stringify(record) + '\n');
        await fh.datasync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, target);
      } catch (e) {
        if (errCode(e) === 'EEXIST') return false;
        throw e;
      }
    } catch (e) {
      throw wrapFsError(`cannot write claim ${target}`, e);
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    // Void if a higher generation exists: we read a stale max and re-created a cleaned-up name.
    const prefix = `${record.subnet.replace('/', '_')}@`;
    const names = await readdir(this.claimsDir).catch((e: unknown) => {
      throw wrapFsError(`cannot read ${this.claimsDir}`, e);
    });
    const gens = names.filter((n) => n.startsWith(prefix)).map((n) => Number(n.slice(prefix.length)));
    if (gens.some((g) => g > record.gen)) {
      await unlink(target).catch(() => undefined);
      return false;
    }
    for (const g of gens) {
      if (g < record.gen - 1) await unlink(join(this.claimsDir, claimName(record.subnet, g))).catch(() => undefined);
    }
    return true;
  }

  private claimsOf(heads: ReadonlyMap<string, ChainHead>): SubnetClaim[] {
    return [...heads.values()].map((h) => ({
      node: h.record?.lease?.node ?? '',
      podCIDRs: [h.subnet],
      // A malformed head blocks its subnet for good: we cannot tell who holds it.
      heldUntil: h.record ? h.record.heldUntil : Number.POSITIVE_INFINITY,
    }));
  }

  private checkedLease(lease: NodeLease, network: ClusterNetwork | undefined): NodeLease {
    const check = validateLease(lease, network);
    if (!check.ok) throw new LeaseRequestError(check.reason);
    return check.lease;
  }

  async acquire(req: AcquireRequest): Promise<NodeLease> {
    assertAcquirable(req);
    this.network ??= req.network;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const heads = await this.readHeads();
      const now = this.now();
      const chosen = chooseSubnets(req.node, req.network, this.claimsOf(heads), { now, reuseGraceMs: this.grace });
      const lease = this.checkedLease(
        { node: req.node, podCIDRs: chosen, expiresAt: now + req.ttlMs, ...attrsOf(req) },
        req.network,
      );
      let won = true;
      for (const subnet of chosen) {
        const head = heads.get(subnet);
        const mine = head?.record?.lease?.node === req.node;
        const since = mine && head.record ? head.record.since : now;
        if (!(await this.casClaim({ subnet, gen: head ? head.gen + 1 : 0, heldUntil: lease.expiresAt, since, lease }))) {
          won = false;
          break;
        }
      }
      if (won) {
        // Subnets this node held before but no longer uses (the network changed): hand them back.
        for (const h of heads.values()) {
          if (h.record?.lease?.node === req.node && !chosen.includes(h.subnet)) await this.tombstone(h, now);
        }
        this.held.set(req.node, chosen);
        return lease;
      }
      // Lost a race. Claims won in this attempt are ours now, so the next choice keeps them.
      await sleep(Math.random() * Math.min(50, 2 + attempt * 2));
    }
    throw new StoreUnavailableError(`embedded store: gave up acquiring a lease for ${req.node} after ${MAX_ATTEMPTS} lost races`);
  }

  private tombstone(h: ChainHead, now: number): Promise<boolean> {
    return this.casClaim({ subnet: h.subnet, gen: h.gen + 1, heldUntil: now, since: now, lease: null });
  }

  async renew(node: string, attrs: NodeAttrs, ttlMs: number): Promise<NodeLease> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const heads = await this.readHeads();
      const now = this.now();
      const records = [...heads.values()].flatMap((h) => (h.record?.lease?.node === node ? [h.record] : []));
      const owned = records.map((r) => r.subnet);
      // After a restart this instance has not acquired yet: the node's subnets in the order its lease had them
      // (directory order would hand the agent its families in a different order from one start to the next).
      const expected = this.held.get(node) ?? subnetsInLeaseOrder(records);
      if (expected.length === 0) throw new LeaseLostError(`node ${node} holds no lease`);
      for (const subnet of expected) {
        if (!owned.includes(subnet)) {
          const other = heads.get(subnet)?.record?.lease?.node;
          throw new LeaseLostError(`subnet ${subnet} of node ${node} is ${other ? `now held by ${other}` : 'released'}`);
        }
      }
      const lease = this.checkedLease({ node, podCIDRs: expected, expiresAt: now + ttlMs, ...attrsOf(attrs) }, this.network);
      let won = true;
      for (const subnet of expected) {
        const h = heads.get(subnet);
        if (!h?.record) continue;
        if (!(await this.casClaim({ subnet, gen: h.gen + 1, heldUntil: lease.expiresAt, since: h.record.since, lease }))) {
          won = false;
          break;
        }
      }
      if (won) return lease;
      await sleep(Math.random() * 5);
    }
    throw new StoreUnavailableError(`embedded store: gave up renewing the lease of ${node}`);
  }

  async list(): Promise<readonly NodeLease[]> {
    const heads = await this.readHeads();
    const now = this.now();
    const byNode = new Map<string, ClaimRecord[]>();
    for (const h of heads.values()) {
      const r = h.record;
      if (!r?.lease || r.heldUntil <= now) continue;
      const list = byNode.get(r.lease.node) ?? [];
      list.push(r);
      byNode.set(r.lease.node, list);
    }
    const assembled: { lease: NodeLease; since: number }[] = [];
    for (const [node, records] of byNode) {
      // The record written last carries the current attributes; each family's chain says which subnets are still held.
      const lease = newestRecord(records).lease;
      if (!lease) continue;
      const podCIDRs = subnetsInLeaseOrder(records);
      const expiresAt = Math.min(...records.map((r) => r.heldUntil));
      const check = validateLease({ ...lease, podCIDRs, expiresAt }, this.network);
      if (!check.ok) {
        this.onInvalid(`node:${node}`, check.reason);
        continue;
      }
      assembled.push({ lease: check.lease, since: Math.min(...records.map((r) => r.since)) });
    }
    assembled.sort((a, b) => a.since - b.since || (a.lease.node < b.lease.node ? -1 : 1));
    const { kept, rejected } = rejectConflicts(assembled.map((a) => a.lease));
    for (const r of rejected) this.onInvalid(`node:${r.lease.node}`, r.reason);
    return kept;
  }

  watch(onChange: () => void): Watch {
    let w: FSWatcher | undefined;
    let closed = false;
    const start = async (): Promise<void> => {
      await this.ensureDirs();
      if (closed) return;
      w = fsWatch(this.claimsDir, { persistent: false }, () => onChange());
      // A broken watch (directory removed) only delays: callers resync periodically.
      w.on('error', () => {
        w?.close();
        onChange();
      });
      this.watchers.add(w);
    };
    start().catch(() => onChange());
    return {
      close: () => {
        closed = true;
        if (w) {
          w.close();
          this.watchers.delete(w);
        }
      },
    };
  }

  async release(node: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const heads = await this.readHeads();
      const mine = [...heads.values()].filter((h) => h.record?.lease?.node === node);
      if (mine.length === 0) break;
      const now = this.now();
      let done = true;
      for (const h of mine) if (!(await this.tombstone(h, now))) done = false;
      if (done) break;
    }
    this.held.delete(node);
  }

  close(): Promise<void> {
    for (const w of this.watchers) w.close();
    this.watchers.clear();
    return Promise.resolve();
  }
}

/**
 * A claim file whose envelope is unreadable blocks its subnet for good (we cannot tell who holds
 * it or until when); one whose lease is malformed blocks it like a lapsed claim of nobody.
 * Leases are checked for syntax only here: whether they fit the current network is list()'s
 * business, and a network change must not make old claims look free.
 */
function parseRecord(text: string, subnet: string, gen: number): { record: ClaimRecord | undefined; reason?: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { record: undefined, reason: 'not JSON' };
  }
  if (typeof raw !== 'object' || raw === null) return { record: undefined, reason: 'not a JSON object' };
  const r = raw as Record<string, unknown>;
  if (r.subnet !== subnet || r.gen !== gen) {
    return { record: undefined, reason: `names subnet ${String(r.subnet)} generation ${String(r.gen)}, not its file name` };
  }
  if (typeof r.heldUntil !== 'number' || !Number.isFinite(r.heldUntil)) return { record: undefined, reason: 'heldUntil is not a time' };
  if (typeof r.since !== 'number' || !Number.isFinite(r.since)) return { record: undefined, reason: 'since is not a time' };
  const base = { subnet, gen, heldUntil: r.heldUntil, since: r.since, lease: null };
  if (r.lease === null) return { record: base };
  const check = validateLease(r.lease);
  if (!check.ok) return { record: base, reason: check.reason };
  if (!check.lease.podCIDRs.includes(subnet)) {
    return { record: base, reason: `lease of node ${check.lease.node} does not list ${subnet}` };
  }
  return { record: { ...base, lease: check.lease } };
}

function attrsOf(a: NodeAttrs): NodeAttrs {
  return {
    underlayIPs: a.underlayIPs,
    backend: a.backend,
    ...(a.vtepMAC !== undefined ? { vtepMAC: a.vtepMAC } : {}),
  };
}
