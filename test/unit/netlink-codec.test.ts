// The netlink encoder and decoder, byte by byte, without a socket: the layouts are the kernel's ABI
// (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h, veth.h, netfilter/nf_tables.h), so a mistake here
// is a request the kernel refuses or, worse, misreads. The root test (test/integration/netlink.test.ts)
// then checks the same requests against a real kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import { Attrs, errnoNameTable, NLA_F_NESTED, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkError, encodeMessage, firstError, header, parseAttrs, parseMessages, attrStr, attrU32, type Message } from '../../src/linux/netlink/codec.ts';
import { utf8Bytes, utf8Length, utf8Text } from '../../src/net/utf8.ts';
import { addAddress, addRoute, createVeth, decodeLink, getLink, ipBytes, macBytes, type Requester } from '../../src/linux/netlink/rtnl.ts';
import { NFPROTO_BRIDGE, encodeElementBatch, encodeKey } from '../../src/linux/netlink/nftset.ts';
import { elementChanges } from '../../src/plugin/antispoof-apply.ts';

const u16 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint16(off, true);
const u32 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

/** Records every request and answers with an empty acknowledgement (or what `answer` returns). */
function recorder(answer?: (type: number) => Message[]) {
  const sent: { what: string; type: number; flags: number; header: Uint8Array; attrs: Map<number, Uint8Array> }[] = [];
  const s: Requester = {
    request(what, type, flags, hdr, attrs) {
      sent.push({ what, type, flags, header: hdr, attrs: parseAttrs(attrs?.encode() ?? new Uint8Array(0)) });
      return answer?.(type) ?? [];
    },
  };
  return { s, sent };
}

test('attributes are type-length-value, each padded to 4 bytes, nested ones flagged', () => {
  const b = new Attrs().str(3, 'ab').u32(4, 1500).nested(18, (n) => n.str(1, 'veth')).encode();
  // "ab\0" is 3 bytes: length 7, padded to 8.
  assert.equal(u16(b, 0), 7);
  assert.equal(u16(b, 2), 3);
  assert.equal(attrStr(b.subarray(4, 7)), 'ab');
  assert.equal(u16(b, 8), 8);
  assert.equal(u32(b, 12), 1500);
  assert.equal(u16(b, 18), 18 | NLA_F_NESTED);
  const parsed = parseAttrs(b);
  assert.equal(attrStr(parsed.get(3)), 'ab');
  assert.equal(attrU32(parsed.get(4)), 1500);
  assert.equal(attrStr(parseAttrs(parsed.get(18)!).get(1)), 'veth', 'nested flag is masked off when parsing');
  assert.equal(b.length % 4, 0);
});

test('a message round-trips: header fields, family header and attributes', () => {
  const hdr = header(16, (v, le) => v.setInt32(4, 7, le));
  const bytes = encodeMessage({ type: 16, flags: NLM_F_CREATE | NLM_F_EXCL, seq: 42, header: hdr, attrs: new Attrs().str(3, 'flat0') });
  assert.equal(u32(bytes, 0), bytes.length);
  const [m] = parseMessages(bytes);
  assert.ok(m);
  assert.equal(m.type, 16);
  assert.equal(m.seq, 42);
  assert.equal(m.flags, NLM_F_CREATE | NLM_F_EXCL);
  assert.equal(u32(m.payload, 4), 7);
  assert.equal(attrStr(parseAttrs(m.payload.subarray(16)).get(3)), 'flat0');
});

test('parseMessages stops at a truncated or nonsensical length instead of reading past the buffer', () => {
  const good = encodeMessage({ type: 3, flags: 0, seq: 1, header: new Uint8Array(4) });
  const bad = new Uint8Array(20);
  new DataView(bad.buffer).setUint32(0, 9999, true);
  const both = new Uint8Array(good.length + bad.length);
  both.set(good);
  both.set(bad, good.length);
  assert.equal(parseMessages(both).length, 1);
  assert.equal(parseMessages(new Uint8Array(7)).length, 0);
});

function errorReply(errno: number, kernelMessage?: string): Message {
  // struct nlmsgerr: -errno, then the request's header (capped), then extended-ack attributes.
  const ext = kernelMessage ? new Attrs().str(1, kernelMessage).encode() : new Uint8Array(0);
  const payload = new Uint8Array(4 + 16 + ext.length);
  const v = new DataView(payload.buffer);
  v.setInt32(0, -errno, true);
  v.setUint32(4, 16, true);
  payload.set(ext, 20);
  return { type: NLMSG_ERROR, flags: 0x100 | (kernelMessage ? 0x200 : 0), seq: 1, payload };
}

test('errors carry the errno name and the kernel’s extended-ack message; a zero error is an ack', () => {
  assert.equal(firstError([errorReply(0)], 'x'), undefined);
  const e = firstError([errorReply(0), errorReply(17, 'Link already exists')], 'create veth flv1');
  assert.ok(e instanceof NetlinkError);
  assert.equal(e.code, 'EEXIST');
  assert.equal(e.errno, 17);
  assert.equal(e.kernelMessage, 'Link already exists');
  assert.match(e.message, /^create veth flv1: EEXIST \(Link already exists\)$/);
  assert.equal(firstError([errorReply(19)], 'get')?.code, 'ENODEV');
  assert.equal(firstError([errorReply(4095)], 'get')?.code, 'errno 4095', 'a number outside the table is still reported');
});

test('the errno table agrees with the running system for every name it holds', () => {
  assert.ok(errnoNameTable().size >= 50);
  for (const [n, name] of errnoNameTable()) assert.equal((osConstants.errno as Record<string, number>)[name], n, name);
});

test('addresses and MACs become network-order bytes; bad MACs are refused', () => {
  assert.deepEqual([...ipBytes('10.1.2.3').bytes], [10, 1, 2, 3]);
  assert.deepEqual([...ipBytes('fd00::1').bytes], [0xfd, 0, ...new Array<number>(13).fill(0), 1]);
  assert.deepEqual([...macBytes('02:AB:00:00:00:ff')], [2, 0xab, 0, 0, 0, 0xff]);
  for (const bad of ['02:ab:00:00:00', '02:ab:00:00:00:fg', '', '0:1:2:3:4:5']) assert.throws(() => macBytes(bad), /not a MAC/);
});

test('createVeth: host end up on the master, peer born in the target namespace (by fd) and left down', () => {
  const { s, sent } = recorder();
  createVeth(s, { hostName: 'flv0123', hostMac: '02:00:00:00:00:02', masterIndex: 5, peerName: 'eth0', peerMac: '02:00:00:00:00:03', peerNetnsFd: 21, mtu: 1450 });
  const [m] = sent;
  assert.ok(m);
  assert.equal(m.type, 16);
  assert.equal(m.flags, NLM_F_CREATE | NLM_F_EXCL);
  assert.equal(u32(m.header, 8) & 1, 1, 'IFF_UP on the host end');
  assert.equal(attrStr(m.attrs.get(3)), 'flv0123');
  assert.equal(attrU32(m.attrs.get(10)), 5, 'IFLA_MASTER');
  assert.equal(attrU32(m.attrs.get(4)), 1450);
  const info = parseAttrs(m.attrs.get(18)!);
  assert.equal(attrStr(info.get(1)), 'veth');
  const peer = parseAttrs(info.get(2)!).get(1)!; // VETH_INFO_PEER: ifinfomsg + attributes
  assert.equal(u32(peer, 8), 0, 'the peer is not brought up at creation (the kernel would answer ENOTCONN)');
  const peerAttrs = parseAttrs(peer.subarray(16));
  assert.equal(attrStr(peerAttrs.get(3)), 'eth0');
  assert.equal(attrU32(peerAttrs.get(28)), 21, 'IFLA_NET_NS_FD');
  assert.deepEqual([...peerAttrs.get(1)!], [2, 0, 0, 0, 0, 3]);
});

test('routes: main table, on-link scope without a gateway, no RTA_DST for a default route', () => {
  const { s, sent } = recorder();
  addRoute(s, 3, '0.0.0.0/0', '10.1.0.1');
  addRoute(s, 3, '10.99.0.0/16');
  addAddress(s, 3, 'fd00::5/64');
  const [dflt, onlink, addr] = sent;
  assert.ok(dflt && onlink && addr);
  assert.equal(dflt.header[1], 0, 'dst_len');
  assert.equal(dflt.header[4], 254, 'RT_TABLE_MAIN');
  assert.equal(dflt.header[6], 0, 'universe scope with a gateway');
  assert.equal(dflt.attrs.has(1), false);
  assert.deepEqual([...dflt.attrs.get(5)!], [10, 1, 0, 1]);
  assert.equal(onlink.header[6], 253, 'link scope without a gateway');
  assert.deepEqual([...onlink.attrs.get(1)!], [10, 99, 0, 0]);
  assert.equal(addr.header[0], 10, 'AF_INET6');
  assert.equal(addr.header[1], 64);
  assert.equal((addr.header[2] ?? 0) & 0x02, 0x02, 'IFA_F_NODAD');
  assert.throws(() => addRoute(s, 3, '10.0.0.0/8', 'fd00::1'), /another family/);
});

test('getLink decodes the kernel’s answer and maps ENODEV to "no such link"', () => {
  const reply = encodeMessage({
    type: 16,
    flags: 0,
    seq: 1,
    header: header(16, (v, le) => {
      v.setInt32(4, 9, le);
      v.setUint32(8, 1, le);
    }),
    attrs: new Attrs().str(3, 'flat0').bytes(1, macBytes('02:00:00:00:00:01')).u32(4, 1500).str(20, 'flatnet:x/eth0@02:00:00:00:00:03').nested(18, (n) => n.str(1, 'bridge')),
  });
  const [msg] = parseMessages(reply);
  assert.ok(msg);
  assert.deepEqual(decodeLink(msg), { ifindex: 9, ifname: 'flat0', address: '02:00:00:00:00:01', mtu: 1500, up: true, kind: 'bridge', alias: 'flatnet:x/eth0@02:00:00:00:00:03' });
  const missing: Requester = {
    request() {
      throw new NetlinkError(19, 'get link flat0');
    },
  };
  assert.equal(getLink(missing, 'flat0'), undefined);
  const denied: Requester = {
    request() {
      throw new NetlinkError(1, 'get link flat0');
    },
  };
  assert.throws(() => getLink(denied, 'flat0'), /EPERM/);
});

test('set keys: each field padded to 4 bytes, interface names to 16', () => {
  const k = encodeKey([{ ifname: 'flv1' }, { bytes: ipBytes('10.0.0.5').bytes }, { bytes: macBytes('02:00:00:00:00:03') }]);
  assert.equal(k.length, 16 + 4 + 8);
  assert.equal(attrStr(k.subarray(0, 16)), 'flv1');
  assert.deepEqual([...k.subarray(16, 20)], [10, 0, 0, 5]);
  assert.deepEqual([...k.subarray(20, 28)], [2, 0, 0, 0, 0, 3, 0, 0]);
  assert.throws(() => encodeKey([{ ifname: 'a-name-of-16-chr' }]), /too long/);
});

test('an element batch is BEGIN, one acknowledged message per non-empty set, END', () => {
  let seq = 0;
  const changes = elementChanges('add', { port: 'flv1', mac: '02:00:00:00:00:03', ips: ['10.0.0.5'] });
  assert.deepEqual(changes.map((c) => [c.elements.set, c.elements.keys.length]), [['pod_macs', 1], ['pods_v4', 1], ['pods_v6', 0]]);
  const { bytes, lastSeq } = encodeElementBatch(NFPROTO_BRIDGE, 'flatnet', changes, () => ++seq);
  const msgs = parseMessages(bytes);
  assert.deepEqual(msgs.map((m) => m.type), [0x10, 0x0a0c, 0x0a0c, 0x11]);
  assert.equal(lastSeq, msgs[2]!.seq, 'the exchange ends with the last element message’s ack');
  assert.equal(msgs[1]!.flags & NLM_F_ACK, NLM_F_ACK);
  assert.equal(msgs[1]!.flags & NLM_F_EXCL, 0, 'adding an existing element is not an error');
  assert.equal(msgs[1]!.payload[0], NFPROTO_BRIDGE);
  assert.equal(new DataView(msgs[0]!.payload.buffer, msgs[0]!.payload.byteOffset).getUint16(2, false), 10, 'res_id: NFNL_SUBSYS_NFTABLES, big-endian');
  const a = parseAttrs(msgs[2]!.payload.subarray(4));
  assert.equal(attrStr(a.get(1)), 'flatnet');
  assert.equal(attrStr(a.get(2)), 'pods_v4');
  // ELEMENTS > LIST_ELEM > SET_ELEM_KEY > DATA_VALUE
  const elem = parseAttrs(a.get(3)!).get(1)!;
  const value = parseAttrs(parseAttrs(elem).get(1)!).get(1);
  assert.ok(value);
  assert.equal(value.length, 28);
  assert.equal(attrStr(value.subarray(0, 16)), 'flv1');
});

test('names convert to and from UTF-8 exactly as Buffer converts them, ASCII by hand or not', () => {
  for (const text of ['', 'flat0', 'eth0', 'flatnet:0123abcd/eth0@aa:bb:cc:dd:ee:ff', 'pod-ü', 'é€😀', 'a\u0000b', '\ud800x']) {
    const bytes = utf8Bytes(text);
    assert.deepEqual([...bytes], [...Buffer.from(text, 'utf8')], JSON.stringify(text));
    assert.equal(utf8Text(bytes), Buffer.from(text, 'utf8').toString('utf8'), JSON.stringify(text));
    assert.equal(utf8Length(text), Buffer.byteLength(text, 'utf8'), JSON.stringify(text));
  }
  // Bytes that are not UTF-8 decode as Buffer decodes them (U+FFFD), not as Latin-1.
  const invalid = Uint8Array.of(0x66, 0xff, 0xc3, 0x28);
  assert.equal(utf8Text(invalid), Buffer.from(invalid).toString('utf8'));
  // A view into a larger buffer reads only its own bytes.
  const whole = Uint8Array.of(0x78, 0x61, 0x62, 0x79);
  assert.equal(utf8Text(whole.subarray(1, 3)), 'ab');
  assert.equal(attrStr(Uint8Array.of(0x66, 0x6c, 0x61, 0x74, 0x30, 0, 0, 0)), 'flat0', 'up to the NUL');
});
