// nftables set elements over nfnetlink: adding and removing a pod's anti-spoofing entries without starting
// `nft` (~30 ms of library load and parsing per call here, for three small elements).
//
// nftables changes go in a batch (BATCH_BEGIN ... BATCH_END) that the kernel applies atomically. A set
// element's key is the concatenation of its fields, each padded to a multiple of 4 bytes (nft's register
// size): an interface name is 16 bytes (IFNAMSIZ, NUL-padded), IPv4 4, IPv6 16, a MAC 6 (+2 padding). Key
// data is in network byte order, which is how addresses are already written.
import { Attrs, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, concat, encodeMessage, firstError, header } from './codec.ts';
import { utf8Bytes } from '../../net/utf8.ts';
import type { NetlinkError } from './codec.ts';
import type { NetlinkSocket } from './socket.ts';

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_DATA_VALUE = 1;

export const NFPROTO_INET = 1;
export const NFPROTO_BRIDGE = 7;

const IFNAMSIZ = 16;

/** One field of a concatenated key. */
export type KeyField = { readonly ifname: string } | { readonly bytes: Uint8Array };

export function encodeKey(fields: readonly KeyField[]): Uint8Array {
  const parts = fields.map((f) => {
    if ('ifname' in f) {
      const name = utf8Bytes(f.ifname);
      if (name.length >= IFNAMSIZ) throw new Error(`interface name too long for a set key: "${f.ifname}"`);
      const b = new Uint8Array(IFNAMSIZ);
      b.set(name);
      return b;
    }
    const b = new Uint8Array((f.bytes.length + 3) & ~3);
    b.set(f.bytes);
    return b;
  });
  return concat(parts);
}

export interface SetElements {
  readonly set: string;
  readonly keys: readonly Uint8Array[];
}

function nfgenmsg(family: number, resId = 0): Uint8Array {
  return header(4, (v) => {
    v.setUint8(0, family);
    v.setUint8(1, 0); // NFNETLINK_V0
    v.setUint16(2, resId, false); // big-endian by definition
  });
}

export type ElementOp = 'add' | 'delete';

export interface ElementChange {
  readonly op: ElementOp;
  readonly elements: SetElements;
}

/** The whole batch as bytes, plus the sequence number of its last acknowledged message. */
export function encodeElementBatch(family: number, table: string, changes: readonly ElementChange[], nextSeq: () => number): { bytes: Uint8Array; lastSeq: number } {
  const msgs: Uint8Array[] = [];
  msgs.push(encodeMessage({ type: NFNL_MSG_BATCH_BEGIN, flags: NLM_F_REQUEST, seq: nextSeq(), header: nfgenmsg(0, NFNL_SUBSYS_NFTABLES) }));
  let lastSeq = 0;
  for (const c of changes) {
    if (c.elements.keys.length === 0) continue;
    lastSeq = nextSeq();
    const attrs = new Attrs()
      .str(NFTA_SET_ELEM_LIST_TABLE, table)
      .str(NFTA_SET_ELEM_LIST_SET, c.elements.set)
      .nested(NFTA_SET_ELEM_LIST_ELEMENTS, (list) => {
        for (const k of c.elements.keys) list.nested(NFTA_LIST_ELEM, (el) => el.nested(NFTA_SET_ELEM_KEY, (key) => key.bytes(NFTA_DATA_VALUE, k)));
        return list;
      });
    const type = (NFNL_SUBSYS_NFTABLES << 8) | (c.op === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
    // Without NLM_F_EXCL, adding an element that is already there is not an error.
    const flags = NLM_F_REQUEST | NLM_F_ACK | (c.op === 'add' ? NLM_F_CREATE : 0);
    msgs.push(encodeMessage({ type, flags, seq: lastSeq, header: nfgenmsg(family), attrs }));
  }
  msgs.push(encodeMessage({ type: NFNL_MSG_BATCH_END, flags: NLM_F_REQUEST, seq: nextSeq(), header: nfgenmsg(0, NFNL_SUBSYS_NFTABLES) }));
  return { bytes: concat(msgs), lastSeq };
}

/** Applies the changes in one transaction; throws the kernel's first error (ENOENT: no such table or set). */
export function applyElementChanges(s: NetlinkSocket, family: number, table: string, changes: readonly ElementChange[], what: string): void {
  if (!changes.some((c) => c.elements.keys.length > 0)) return;
  const { bytes, lastSeq } = encodeElementBatch(family, table, changes, () => s.nextSeq());
  const err: NetlinkError | undefined = firstError(s.exchange(bytes, lastSeq), what);
  if (err) throw err;
}
