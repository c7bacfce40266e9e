// Putting a pod's anti-spoofing entries into the kernel and taking them out (the table is described in
// antispoof.ts). With the netlink addon, the entries go in as one nfnetlink batch, synchronously, before
// ADD returns; `nft` is started only when the table itself is missing (the node's first pod) or not the
// shape we expect, and then it re-renders the whole table in one transaction. Without the addon, `nft`
// runs detached as before: the port stays closed until the entries land.
import { NetlinkError } from '../linux/netlink/codec.ts';
import { type ElementChange, NFPROTO_BRIDGE, applyElementChanges, encodeKey } from '../linux/netlink/nftset.ts';
import { ipBytes, macBytes } from '../linux/netlink/rtnl.ts';
import { NETLINK_NETFILTER, NetlinkSocket, netlinkAvailable } from '../linux/netlink/socket.ts';
import { applyNftScript } from '../linux/nft.ts';
import { spawnDetached } from '../linux/run.ts';
import { AS_TABLE, type PortEntries, renderAntiSpoofAdd, renderAntiSpoofDelete } from './antispoof.ts';

/** The three sets' elements for one port, as nftables keys. */
export function elementChanges(op: 'add' | 'delete', e: PortEntries): ElementChange[] {
  const mac = macBytes(e.mac);
  const port = { ifname: e.port };
  const v4 = e.ips.filter((ip) => !ip.includes(':'));
  const v6 = e.ips.filter((ip) => ip.includes(':'));
  const keyed = (ips: string[]) => ips.map((ip) => encodeKey([port, { bytes: ipBytes(ip).bytes }, { bytes: mac }]));
  return [
    { op, elements: { set: 'pod_macs', keys: [encodeKey([port, { bytes: mac }])] } },
    { op, elements: { set: 'pods_v4', keys: keyed(v4) } },
    { op, elements: { set: 'pods_v6', keys: keyed(v6) } },
  ];
}

function withNetfilter<T>(fn: (s: NetlinkSocket) => T): T {
  const s = new NetlinkSocket(NETLINK_NETFILTER);
  try {
    return fn(s);
  } finally {
    s.close();
  }
}

/** Opens the port for its own addresses. Throws when the entries cannot be put in place. */
export async function allowPort(e: PortEntries): Promise<void> {
  if (!netlinkAvailable()) {
    spawnDetached(['nft', renderAntiSpoofAdd(e)]);
    return;
  }
  try {
    withNetfilter((s) => applyElementChanges(s, NFPROTO_BRIDGE, AS_TABLE, elementChanges('add', e), `anti-spoofing entries for ${e.port}`));
  } catch (err) {
    if (!(err instanceof NetlinkError)) throw err;
    // No table yet, or one whose sets are not what this version writes: render it whole (with the entries).
    await applyNftScript(renderAntiSpoofAdd(e));
  }
}

/** Removes ports' entries; entries or a table that are already gone are fine. */
export function forgetPorts(entries: readonly PortEntries[]): void {
  if (!netlinkAvailable()) {
    spawnDetached(['nft', renderAntiSpoofDelete(entries)]);
    return;
  }
  // Adding each element first makes the delete succeed whether or not it was there, in one transaction.
  const changes = entries.flatMap((e) => [...elementChanges('add', e), ...elementChanges('delete', e)]);
  try {
    withNetfilter((s) => applyElementChanges(s, NFPROTO_BRIDGE, AS_TABLE, changes, 'removing anti-spoofing entries'));
  } catch (err) {
    if (err instanceof NetlinkError && err.code === 'ENOENT') return; // no table: nothing to remove
    throw err;
  }
}
