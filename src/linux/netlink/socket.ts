// A netlink socket through flatnet's addon (native/netlink.c; loaded by ../native-addon.ts).
//
// The netlink path is optional at run time: `loadNetlink()` returns undefined when the addon is not built,
// cannot be loaded, or FLATNET_NETLINK=off asks for the iproute2/nft path (every caller keeps that path,
// so a plugin copied without its addon still works, one process start per step slower).
import { type Message, NLM_F_ACK, NLM_F_REQUEST, concat, encodeMessage, firstError, parseMessages } from './codec.ts';
import type { Attrs } from './codec.ts';
import { loadAddon } from '../native-addon.ts';
import { closeFile, openReadOnly } from '../files.ts';

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;

/** The addon's netlink functions. */
interface NativeNetlink {
  open(protocol: number, netnsFd?: number, timeoutMs?: number): number;
  transact(fd: number, request: Uint8Array, lastSeq: number): Uint8Array;
  close(fd: number): void;
}

export function loadNetlink(): NativeNetlink | undefined {
  if (process.env['FLATNET_NETLINK'] === 'off') return undefined;
  const a = loadAddon() as Partial<NativeNetlink> | undefined;
  return typeof a?.open === 'function' && typeof a.transact === 'function' && typeof a.close === 'function' ? (a as NativeNetlink) : undefined;
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
  const fd = openReadOnly(path);
  return { fd, close: () => closeFile(fd) };
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

