// Netlink message encoding and decoding: pure byte work, no sockets (those are in socket.ts).
//
// A netlink message is a 16-byte header (length, type, flags, sequence, port id), a fixed family header
// (ifinfomsg, ifaddrmsg, rtmsg, nfgenmsg) and a list of type-length-value attributes, each padded to 4
// bytes; an attribute may nest another list. Numbers are in host byte order, except where a family
// says otherwise (nftables data and nfgenmsg's res_id are big-endian).
// Not node:os: the CNI plugin would load that module on every call for these two facts (~0.3 ms).
import { utf8Bytes, utf8Text } from '../../net/utf8.ts';

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** In an error message: the original request was cut to its header. */
const NLM_F_CAPPED = 0x100;
/** In an error message: extended-ack attributes follow. */
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

const align4 = (n: number): number => (n + 3) & ~3;

/** Builds one attribute list. Methods return `this` so a list reads as one expression. */
export class Attrs {
  private readonly parts: Uint8Array[] = [];

  bytes(type: number, value: Uint8Array): this {
    const len = 4 + value.length;
    const buf = new Uint8Array(align4(len));
    const v = new DataView(buf.buffer);
    v.setUint16(0, len, LE);
    v.setUint16(2, type, LE);
    buf.set(value, 4);
    this.parts.push(buf);
    return this;
  }

  /** A NUL-terminated string, as the kernel's NLA_STRING/NLA_NUL_STRING policies expect. */
  str(type: number, value: string): this {
    const b = utf8Bytes(value);
    const z = new Uint8Array(b.length + 1);
    z.set(b);
    return this.bytes(type, z);
  }

  u8(type: number, value: number): this {
    return this.bytes(type, Uint8Array.of(value));
  }

  u32(type: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, LE);
    return this.bytes(type, b);
  }

  nested(type: number, build: (a: Attrs) => Attrs): this {
    return this.bytes(type | NLA_F_NESTED, build(new Attrs()).encode());
  }

  /** Like nested(), for the few attributes that carry a fixed header before their list (veth's peer). */
  nestedWithHeader(type: number, header: Uint8Array, build: (a: Attrs) => Attrs): this {
    const inner = build(new Attrs()).encode();
    const buf = new Uint8Array(align4(header.length) + inner.length);
    buf.set(header);
    buf.set(inner, align4(header.length));
    return this.bytes(type, buf);
  }

  encode(): Uint8Array {
    return concat(this.parts);
  }
}

export interface MessageSpec {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  /** The family's fixed header (ifinfomsg, rtmsg, ...). */
  readonly header: Uint8Array;
  readonly attrs?: Attrs;
}

export function encodeMessage(m: MessageSpec): Uint8Array {
  const attrs = m.attrs?.encode() ?? new Uint8Array(0);
  const hdrLen = align4(m.header.length);
  const len = 16 + hdrLen + attrs.length;
  const buf = new Uint8Array(len);
  const v = new DataView(buf.buffer);
  v.setUint32(0, len, LE);
  v.setUint16(4, m.type, LE);
  v.setUint16(6, m.flags, LE);
  v.setUint32(8, m.seq, LE);
  v.setUint32(12, 0, LE);
  buf.set(m.header, 16);
  buf.set(attrs, 16 + hdrLen);
  return buf;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export interface Message {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  /** Everything after the 16-byte header. */
  readonly payload: Uint8Array;
}

/** Splits a buffer of one or more datagrams into messages; stops at a malformed length. */
export function parseMessages(buf: Uint8Array): Message[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Message[] = [];
  let off = 0;
  while (off + 16 <= buf.length) {
    const len = v.getUint32(off, LE);
    if (len < 16 || off + len > buf.length) break;
    out.push({
      type: v.getUint16(off + 4, LE),
      flags: v.getUint16(off + 6, LE),
      seq: v.getUint32(off + 8, LE),
      payload: buf.subarray(off + 16, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** The attributes of a list, by type (flags such as NLA_F_NESTED masked off; the last one of a type wins). */
export function parseAttrs(buf: Uint8Array): Map<number, Uint8Array> {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Map<number, Uint8Array>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = v.getUint16(off, LE);
    if (len < 4 || off + len > buf.length) break;
    out.set(v.getUint16(off + 2, LE) & NLA_TYPE_MASK, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

export function attrStr(b: Uint8Array | undefined): string | undefined {
  if (!b) return undefined;
  const end = b.indexOf(0);
  return utf8Text(end < 0 ? b : b.subarray(0, end));
}

export function attrU32(b: Uint8Array | undefined): number | undefined {
  if (!b || b.length < 4) return undefined;
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, LE);
}

export function readU32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, LE);
}

export function readI32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getInt32(off, LE);
}

/** A header of `size` bytes filled by `fill` through a DataView in host order. */
export function header(size: number, fill: (v: DataView, le: boolean) => void): Uint8Array {
  const b = new Uint8Array(size);
  fill(new DataView(b.buffer), LE);
  return b;
}

let errnoNames: ReadonlyMap<number, string> | undefined;

/**
 * Linux's errno names for the numbers netlink answers with (the generic table, which x86-64 and arm64
 * share); anything else reads `errno N`. A unit test checks every entry against Node's os.constants.
 * Built on first use: only a failed request needs it, and building it as the module loaded cost every
 * plugin call ~0.2 ms (the bundle's top level went from 0.75 to 0.51 ms, docs/benchmarks.md).
 */
export function errnoNameTable(): ReadonlyMap<number, string> {
  errnoNames ??= new Map(
    (
      [
        [1, 'EPERM'], [2, 'ENOENT'], [3, 'ESRCH'], [4, 'EINTR'], [5, 'EIO'], [6, 'ENXIO'], [7, 'E2BIG'], [8, 'ENOEXEC'],
        [9, 'EBADF'], [10, 'ECHILD'], [11, 'EAGAIN'], [12, 'ENOMEM'], [13, 'EACCES'], [14, 'EFAULT'], [16, 'EBUSY'],
        [17, 'EEXIST'], [18, 'EXDEV'], [19, 'ENODEV'], [20, 'ENOTDIR'], [21, 'EISDIR'], [22, 'EINVAL'], [23, 'ENFILE'],
        [24, 'EMFILE'], [25, 'ENOTTY'], [26, 'ETXTBSY'], [27, 'EFBIG'], [28, 'ENOSPC'], [29, 'ESPIPE'], [30, 'EROFS'],
        [31, 'EMLINK'], [32, 'EPIPE'], [33, 'EDOM'], [34, 'ERANGE'], [35, 'EDEADLK'], [36, 'ENAMETOOLONG'],
        [38, 'ENOSYS'], [39, 'ENOTEMPTY'], [40, 'ELOOP'], [61, 'ENODATA'], [71, 'EPROTO'], [74, 'EBADMSG'],
        [75, 'EOVERFLOW'], [90, 'EMSGSIZE'], [93, 'EPROTONOSUPPORT'], [95, 'EOPNOTSUPP'], [97, 'EAFNOSUPPORT'],
        [98, 'EADDRINUSE'], [99, 'EADDRNOTAVAIL'], [100, 'ENETDOWN'], [101, 'ENETUNREACH'], [105, 'ENOBUFS'],
        [110, 'ETIMEDOUT'], [113, 'EHOSTUNREACH'], [114, 'EALREADY'], [115, 'EINPROGRESS'], [125, 'ECANCELED'],
      ] as const
    ).map(([n, name]) => [n, name]),
  );
  return errnoNames;
}

/** A request the kernel refused: errno by number and by name, plus the kernel's own words when it gave any. */
export class NetlinkError extends Error {
  override readonly name = 'NetlinkError';
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly what: string,
    readonly kernelMessage?: string,
  ) {
    const code = errnoNameTable().get(errno) ?? `errno ${errno}`;
    super(`${what}: ${code}${kernelMessage ? ` (${kernelMessage})` : ''}`);
    this.code = code;
  }
}

/**
 * The first error among the replies, or undefined when every acknowledgement says 0. An error message
 * carries -errno, the request it answers (whole, or only its header when capped) and, with extended
 * acks, the kernel's explanation.
 */
export function firstError(replies: readonly Message[], what: string): NetlinkError | undefined {
  for (const m of replies) {
    if (m.type !== NLMSG_ERROR || m.payload.length < 4) continue;
    const err = readI32(m.payload, 0);
    if (err === 0) continue;
    let kernelMessage: string | undefined;
    if (m.flags & NLM_F_ACK_TLVS && m.payload.length >= 4 + 16) {
      const origLen = readU32(m.payload, 4);
      const skip = 4 + (m.flags & NLM_F_CAPPED ? 16 : align4(origLen));
      kernelMessage = attrStr(parseAttrs(m.payload.subarray(skip)).get(NLMSGERR_ATTR_MSG));
    }
    return new NetlinkError(-err, what, kernelMessage);
  }
  return undefined;
}
