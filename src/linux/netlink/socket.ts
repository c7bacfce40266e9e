// A netlink socket through flatnet's addon (native/netlink.c), and the one place that loads it (the CNI
// plugin's loader loads it even earlier and hands it over: adoptNetlink).
//
// The addon is optional at run time: `loadNetlink()` returns undefined when it is not built, cannot be
// loaded, or FLATNET_NETLINK=off asks for the iproute2/nft path (every caller keeps that path, so a plugin
// copied without its addon still works, one process start per step slower).
import { closeSync, openSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Message, NLM_F_ACK, NLM_F_REQUEST, concat, encodeMessage, firstError, parseMessages } from './codec.ts';
import type { Attrs } from './codec.ts';

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;

/** The addon's functions. */
interface NativeNetlink {
  open(protocol: number, netnsFd?: number, timeoutMs?: number): number;
  transact(fd: number, request: Uint8Array, lastSeq: number): Buffer;
  close(fd: number): void;
  /** _exit(2); absent from an addon built before it existed. */
  exitNow?(code: number): never;
}

export const ADDON_FILE = 'flatnet-netlink.node';
let loaded: NativeNetlink | null | undefined;

/** Where the addon may be: beside the running bundle (dist/cni/), or dist/cni/ seen from dist/bin/. */
function candidates(): string[] {
  const out: string[] = [];
  const main = process.argv[1];
  if (main) {
    try {
      // The native realpath(3): one syscall, where the JavaScript one walks the path (~0.4 ms of a plugin call).
      const dir = dirname(realpathSync.native(main));
      out.push(join(dir, ADDON_FILE), join(dir, '..', 'cni', ADDON_FILE));
    } catch {
      /* no such file: a REPL or -e; nothing beside it */
    }
  }
  if (process.env['FLATNET_NETLINK_ADDON']) out.unshift(process.env['FLATNET_NETLINK_ADDON']);
  return out;
}

/**
 * Takes the addon the CNI plugin's loader has already loaded from beside the plugin file (it reads the
 * plugin's code through it: scripts/cni-plugin.mjs), so it is not looked for and loaded a second time.
 * FLATNET_NETLINK_ADDON, which names another file, still wins.
 */
export function adoptNetlink(addon: unknown): void {
  if (loaded !== undefined || process.env['FLATNET_NETLINK_ADDON']) return;
  const a = addon as Partial<NativeNetlink> | undefined;
  if (typeof a?.open === 'function' && typeof a.transact === 'function' && typeof a.close === 'function') loaded = a as NativeNetlink;
}

export function loadNetlink(): NativeNetlink | undefined {
  if (process.env['FLATNET_NETLINK'] === 'off') return undefined;
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  for (const file of candidates()) {
    try {
      const m = { exports: {} };
      process.dlopen(m, file);
      loaded = m.exports as NativeNetlink;
      break;
    } catch {
      /* next candidate */
    }
  }
  return loaded ?? undefined;
}

/**
 * Ends the process without tearing Node down (no exit handlers, no joining V8's threads), through the
 * addon if this process has already loaded it, else process.exit. Only for a process whose output is
 * written synchronously and complete: the CNI plugin after its answer.
 */
export function exitWithoutTeardown(code: number): never {
  if (loaded?.exitNow) loaded.exitNow(code);
  process.exit(code);
}

/** Whether the netlink path is usable in this process. */
export function netlinkAvailable(): boolean {
  return loadNetlink() !== undefined;
}

export class NetlinkSocket {
  private seq = 0;
  private readonly fd: number;
  private readonly native: NativeNetlink;

  /** A socket in this process's namespace, or in the namespace open at `netnsFd`. */
  constructor(protocol: number, netnsFd?: number) {
    const native = loadNetlink();
    if (!native) throw new Error('the netlink addon is not available');
    this.native = native;
    this.fd = native.open(protocol, netnsFd);
  }

  nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  /** Sends raw bytes and returns the replies up to the answer to `lastSeq`. */
  exchange(bytes: Uint8Array, lastSeq: number): Message[] {
    return parseMessages(this.native.transact(this.fd, bytes, lastSeq));
  }

  /**
   * One request, acknowledged: returns the replies (for a GET, the object before the ack) or throws the
   * kernel's error as a NetlinkError whose message starts with `what`.
   */
  request(what: string, type: number, flags: number, header: Uint8Array, attrs?: Attrs): Message[] {
    const seq = this.nextSeq();
    const bytes = encodeMessage({ type, flags: flags | NLM_F_REQUEST | NLM_F_ACK, seq, header, ...(attrs ? { attrs } : {}) });
    const replies = this.exchange(bytes, seq);
    const err = firstError(replies, what);
    if (err) throw err;
    return replies;
  }

  /**
   * Sends a batch's requests in one datagram. The kernel handles them in order within the send and
   * acknowledges each, going on after a failure: batch only steps where that is harmless. Throws the first
   * failure, named by its own request.
   */
  send(batch: RequestBatch): void {
    const items = batch.take();
    if (items.length === 0) return;
    const seqs = items.map(() => this.nextSeq());
    const parts = items.map((it, i) => encodeMessage({ type: it.type, flags: it.flags | NLM_F_REQUEST | NLM_F_ACK, seq: seqs[i]!, header: it.header, ...(it.attrs ? { attrs: it.attrs } : {}) }));
    const replies = this.exchange(concat(parts), seqs.at(-1)!);
    items.forEach((it, i) => {
      const err = firstError(replies.filter((r) => r.seq === seqs[i]), it.what);
      if (err) throw err;
    });
  }

  close(): void {
    this.native.close(this.fd);
  }
}

/** An open network namespace file: its fd is what IFLA_NET_NS_FD and setns take. */
export function openNetns(path: string): { fd: number; close(): void } {
  const fd = openSync(path, 'r');
  return { fd, close: () => closeSync(fd) };
}

interface BatchItem {
  readonly what: string;
  readonly type: number;
  readonly flags: number;
  readonly header: Uint8Array;
  readonly attrs?: Attrs;
}

/** Requests recorded to be sent together by NetlinkSocket.send (they return no replies: no GETs here). */
export class RequestBatch {
  private items: BatchItem[] = [];

  request(what: string, type: number, flags: number, header: Uint8Array, attrs?: Attrs): Message[] {
    this.items.push({ what, type, flags, header, ...(attrs ? { attrs } : {}) });
    return [];
  }

  take(): BatchItem[] {
    const out = this.items;
    this.items = [];
    return out;
  }
}

