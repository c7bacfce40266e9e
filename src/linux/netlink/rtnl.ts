// rtnetlink requests flatnet makes: links (bridge, veth pair), addresses and routes. Each function is one
// request on a given socket; the socket decides the namespace. Encodings follow include/uapi/linux/
// rtnetlink.h, if_link.h, if_addr.h and veth.h.
import { Attrs, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkError, type Message, attrStr, attrU32, header, parseAttrs, readI32, readU32 } from './codec.ts';
import { type Family, parseIP, tryParsePrefix } from '../../net/ip.ts';

const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_NEWROUTE = 24;

const AF_INET = 2;
const AF_INET6 = 10;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_IFALIAS = 20;
const IFLA_NET_NS_FD = 28;
const IFLA_EXT_MASK = 29;
/** Leave the statistics out of a link reply: nothing here reads them, and the kernel sums them per CPU. */
const RTEXT_FILTER_SKIP_STATS = 1 << 3;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_INFO_SLAVE_KIND = 4;
const IFLA_INFO_SLAVE_DATA = 5;
const IFLA_BRPORT_MODE = 4; // hairpin
const VETH_INFO_PEER = 1;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_F_NODAD = 0x02;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_TABLE = 15;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3; // what `ip route add` uses
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;

export const IFF_UP = 0x1;

/** What these functions need of a socket: one acknowledged request (NetlinkSocket; a recorder in unit tests). */
export interface Requester {
  request(what: string, type: number, flags: number, header: Uint8Array, attrs?: Attrs): Message[];
}

export interface Link {
  readonly ifindex: number;
  readonly ifname: string;
  readonly address: string;
  readonly mtu: number;
  readonly up: boolean;
  readonly kind?: string;
  readonly master?: number;
  readonly alias?: string;
}

function ifinfomsg(index = 0, flags = 0, change = 0): Uint8Array {
  return header(16, (v, le) => {
    v.setUint8(0, 0); // AF_UNSPEC
    v.setInt32(4, index, le);
    v.setUint32(8, flags, le);
    v.setUint32(12, change, le);
  });
}

export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`not a MAC address: "${mac}"`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

function macText(b: Uint8Array | undefined): string {
  return b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : '';
}

export function ipBytes(text: string): { family: Family; bytes: Uint8Array } {
  const ip = parseIP(text);
  const len = ip.family === 4 ? 4 : 16;
  const bytes = new Uint8Array(len);
  let v = ip.value;
  for (let i = len - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return { family: ip.family, bytes };
}

export function decodeLink(m: Message): Link {
  const p = m.payload;
  const a = parseAttrs(p.subarray(16));
  const info = a.get(IFLA_LINKINFO);
  const kind = info ? attrStr(parseAttrs(info).get(IFLA_INFO_KIND)) : undefined;
  const master = attrU32(a.get(IFLA_MASTER));
  const alias = attrStr(a.get(IFLA_IFALIAS));
  return {
    ifindex: readI32(p, 4),
    ifname: attrStr(a.get(IFLA_IFNAME)) ?? '',
    address: macText(a.get(IFLA_ADDRESS)),
    mtu: attrU32(a.get(IFLA_MTU)) ?? 0,
    up: (readU32(p, 8) & IFF_UP) !== 0,
    ...(kind !== undefined ? { kind } : {}),
    ...(master !== undefined && master !== 0 ? { master } : {}),
    ...(alias !== undefined && alias !== '' ? { alias } : {}),
  };
}

/** The link called `name` in the socket's namespace, or undefined when there is none. */
export function getLink(s: Requester, name: string): Link | undefined {
  try {
    const replies = s.request(`get link ${name}`, RTM_GETLINK, 0, ifinfomsg(), new Attrs().str(IFLA_IFNAME, name).u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS));
    const m = replies.find((r) => r.type === RTM_NEWLINK);
    return m ? decodeLink(m) : undefined;
  } catch (e) {
    if (e instanceof NetlinkError && e.code === 'ENODEV') return undefined;
    throw e;
  }
}

export function createBridge(s: Requester, name: string, mtu: number, mac: string): void {
  s.request(
    `create bridge ${name}`,
    RTM_NEWLINK,
    NLM_F_CREATE | NLM_F_EXCL,
    ifinfomsg(),
    new Attrs()
      .str(IFLA_IFNAME, name)
      .bytes(IFLA_ADDRESS, macBytes(mac))
      .u32(IFLA_MTU, mtu)
      .nested(IFLA_LINKINFO, (l) => l.str(IFLA_INFO_KIND, 'bridge')),
  );
}

export function setLinkUp(s: Requester, ifindex: number, name: string): void {
  s.request(`set ${name} up`, RTM_NEWLINK, 0, ifinfomsg(ifindex, IFF_UP, IFF_UP));
}

export interface VethSpec {
  readonly hostName: string;
  readonly hostMac: string;
  readonly masterIndex: number;
  readonly peerName: string;
  readonly peerMac: string;
  /** fd of the peer's network namespace: the peer is created there, never moved (moving costs 17-20 ms). */
  readonly peerNetnsFd: number;
  readonly mtu: number;
}

/** A veth pair, the host end up and on the bridge, the peer born (down) in the pod's namespace. */
export function createVeth(s: Requester, v: VethSpec): void {
  s.request(
    `create veth ${v.hostName} (peer ${v.peerName} in the pod's namespace)`,
    RTM_NEWLINK,
    NLM_F_CREATE | NLM_F_EXCL,
    ifinfomsg(0, IFF_UP, IFF_UP),
    new Attrs()
      .str(IFLA_IFNAME, v.hostName)
      .bytes(IFLA_ADDRESS, macBytes(v.hostMac))
      .u32(IFLA_MTU, v.mtu)
      .u32(IFLA_MASTER, v.masterIndex)
      .nested(IFLA_LINKINFO, (l) =>
        l.str(IFLA_INFO_KIND, 'veth').nested(IFLA_INFO_DATA, (d) =>
          // The peer cannot be brought up here: the kernel configures it before the pair is joined, and
          // opening an unjoined veth fails with ENOTCONN. The pod side sets it up in its own namespace.
          d.nestedWithHeader(VETH_INFO_PEER, ifinfomsg(), (p) =>
            p.str(IFLA_IFNAME, v.peerName).bytes(IFLA_ADDRESS, macBytes(v.peerMac)).u32(IFLA_MTU, v.mtu).u32(IFLA_NET_NS_FD, v.peerNetnsFd),
          ),
        ),
      ),
  );
}

/**
 * Sets a port's alias and (optionally) hairpin mode in one request; the kernel ignores an alias at creation.
 * With ifindex 0 the kernel finds the port by `name`.
 */
export function setPortAliasAndHairpin(s: Requester, ifindex: number, name: string, alias: string, hairpin: boolean): void {
  const attrs = new Attrs();
  if (ifindex === 0) attrs.str(IFLA_IFNAME, name);
  attrs.str(IFLA_IFALIAS, alias);
  if (hairpin) {
    attrs.nested(IFLA_LINKINFO, (l) => l.str(IFLA_INFO_SLAVE_KIND, 'bridge').nested(IFLA_INFO_SLAVE_DATA, (d) => d.u8(IFLA_BRPORT_MODE, 1)));
  }
  s.request(`set alias${hairpin ? ' and hairpin' : ''} on ${name}`, RTM_NEWLINK, 0, ifinfomsg(ifindex), attrs);
}

export function deleteLink(s: Requester, ifindex: number, name: string): void {
  s.request(`delete link ${name}`, RTM_DELLINK, 0, ifinfomsg(ifindex));
}

/** Adds "addr/len" to a link; `replace` succeeds when it is already there (as `ip addr replace`). */
export function addAddress(s: Requester, ifindex: number, cidr: string, opts: { replace?: boolean } = {}): void {
  const p = tryParsePrefix(cidr);
  if (!p) throw new Error(`not an address with prefix length: "${cidr}"`);
  const { family, bytes } = ipBytes(cidr.split('/')[0]!);
  // Duplicate address detection would hold an IPv6 address "tentative" for a second; the allocator
  // already guarantees uniqueness, so skip it as the reference plugins do.
  const flags = family === 6 ? IFA_F_NODAD : 0;
  const hdr = header(8, (v, le) => {
    v.setUint8(0, family === 4 ? AF_INET : AF_INET6);
    v.setUint8(1, p.length);
    v.setUint8(2, flags);
    v.setUint8(3, RT_SCOPE_UNIVERSE);
    v.setUint32(4, ifindex, le);
  });
  s.request(
    `add address ${cidr}`,
    RTM_NEWADDR,
    NLM_F_CREATE | (opts.replace ? NLM_F_REPLACE : NLM_F_EXCL),
    hdr,
    new Attrs().bytes(IFA_LOCAL, bytes).bytes(IFA_ADDRESS, bytes),
  );
}

/** A route in the main table out of `ifindex`, via `gw` when given (else on-link). */
export function addRoute(s: Requester, ifindex: number, dst: string, gw?: string): void {
  const p = tryParsePrefix(dst);
  if (!p) throw new Error(`not a destination prefix: "${dst}"`);
  const family = p.ip.family;
  const hdr = header(12, (v) => {
    v.setUint8(0, family === 4 ? AF_INET : AF_INET6);
    v.setUint8(1, p.length);
    v.setUint8(4, RT_TABLE_MAIN);
    v.setUint8(5, RTPROT_BOOT);
    v.setUint8(6, gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
    v.setUint8(7, RTN_UNICAST);
  });
  const attrs = new Attrs();
  if (p.length > 0) attrs.bytes(RTA_DST, ipBytes(dst.split('/')[0]!).bytes);
  if (gw) {
    const g = ipBytes(gw);
    if (g.family !== family) throw new Error(`route ${dst}: gateway ${gw} is of another family`);
    attrs.bytes(RTA_GATEWAY, g.bytes);
  }
  attrs.u32(RTA_OIF, ifindex).u32(RTA_TABLE, RT_TABLE_MAIN);
  s.request(`add route ${dst}${gw ? ` via ${gw}` : ''}`, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, hdr, attrs);
}
