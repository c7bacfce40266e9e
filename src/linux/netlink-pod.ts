// Wiring one pod over netlink, in this process: the same steps as iproute-pod.ts (which stays as the path
// without the addon) but without a single process start. One socket in the node's namespace, one created
// inside the pod's namespace; the veth peer is born in the pod's namespace (IFLA_NET_NS_FD), never moved.
import { type HostSide, type LinkInfo, LinkExistsError, NetnsError, NoSuchDeviceError, NotABridgeError, type PodSide } from './iproute-pod.ts';
import { NetlinkError } from './netlink/codec.ts';
import { type Link, addAddress, addRoute, createBridge, createVeth, deleteLink, getLink, setLinkUp, setPortAliasAndHairpin } from './netlink/rtnl.ts';
import { NETLINK_ROUTE, NetlinkSocket, RequestBatch, openNetns } from './netlink/socket.ts';
import { netnsPath } from './run.ts';

function toLinkInfo(l: Link): LinkInfo {
  return {
    ifindex: l.ifindex,
    ifname: l.ifname,
    address: l.address,
    mtu: l.mtu,
    flags: l.up ? ['UP'] : [],
    ...(l.kind !== undefined ? { kind: l.kind } : {}),
    ...(l.alias !== undefined ? { alias: l.alias } : {}),
  };
}

function withSocket<T>(netnsFd: number | undefined, fn: (s: NetlinkSocket) => T): T {
  const s = new NetlinkSocket(NETLINK_ROUTE, netnsFd);
  try {
    return fn(s);
  } finally {
    s.close();
  }
}

/** See iproute-pod.ts setupPodLink: same contract, same errors. */
export function setupPodLink(h: HostSide, p: PodSide): Promise<LinkInfo> {
  return Promise.resolve().then(() => setupPodLinkSync(h, p));
}

function setupPodLinkSync(h: HostSide, p: PodSide): LinkInfo {
  let ns: { fd: number; close(): void } | undefined;
  let pod: NetlinkSocket;
  try {
    ns = openNetns(netnsPath(p.netns));
    // Entering the namespace first proves the path is one (setns refuses anything else), before any change.
    pod = new NetlinkSocket(NETLINK_ROUTE, ns.fd);
  } catch (e) {
    ns?.close();
    throw new NetnsError(`cannot use network namespace ${p.netns}: ${(e as Error).message}`);
  }
  const nsFd = ns.fd;
  try {
    return withSocket(undefined, (host) => {
      let bridge = getLink(host, h.bridge);
      if (!bridge) throw new NoSuchDeviceError(`bridge ${h.bridge} does not exist`);
      if (bridge.kind !== 'bridge') throw new NotABridgeError(`"${h.bridge}" already exists but is not a bridge (kind ${bridge.kind ?? 'none'})`);
      try {
        createVeth(host, { hostName: h.hostVeth, hostMac: h.hostMac, masterIndex: bridge.ifindex, peerName: p.ifname, peerMac: p.mac, peerNetnsFd: nsFd, mtu: h.mtu });
      } catch (e) {
        if (e instanceof NetlinkError && e.code === 'EEXIST') throw new LinkExistsError(`interface ${p.ifname} or ${h.hostVeth} already exists: ${e.message}`);
        throw e;
      }
      try {
        // One datagram each side: nothing in these depends on the answer to another, and a failure of any
        // undoes the pair below.
        const hostSteps = new RequestBatch();
        setPortAliasAndHairpin(hostSteps, 0, h.hostVeth, h.alias, h.hairpin);
        for (const a of h.bridgeAddrs) addAddress(hostSteps, bridge.ifindex, a, { replace: true });
        // A plugin killed between creating the bridge and setting it up leaves it down: every ADD makes sure.
        if (!bridge.up) {
          setLinkUp(hostSteps, bridge.ifindex, h.bridge);
          bridge = { ...bridge, up: true };
        }
        host.send(hostSteps);
        const eth = getLink(pod, p.ifname);
        if (!eth) throw new Error(`${p.ifname} is missing from ${p.netns} right after its creation`);
        const podSteps = new RequestBatch();
        setLinkUp(podSteps, eth.ifindex, p.ifname);
        for (const a of p.addrs) addAddress(podSteps, eth.ifindex, a);
        for (const r of p.routes) addRoute(podSteps, eth.ifindex, r.dst, r.gw);
        pod.send(podSteps);
        return toLinkInfo(bridge);
      } catch (e) {
        // The pair goes away with its host end, wherever the other end is.
        try {
          const port = getLink(host, h.hostVeth);
          if (port) deleteLink(host, port.ifindex, h.hostVeth);
        } catch {
          /* the original error is the one to report */
        }
        throw e;
      }
    });
  } finally {
    pod.close();
    ns.close();
  }
}

/** See iproute-pod.ts ensureBridge: EEXIST from a racing creator is success; another kind is an error. */
export function ensureBridge(name: string, mtu: number, mac: string): Promise<LinkInfo> {
  return Promise.resolve().then(() =>
    withSocket(undefined, (s) => {
      try {
        createBridge(s, name, mtu, mac);
      } catch (e) {
        if (!(e instanceof NetlinkError && e.code === 'EEXIST')) throw e;
      }
      const link = getLink(s, name);
      if (!link) throw new NoSuchDeviceError(`bridge ${name} vanished while being created`);
      if (link.kind !== 'bridge') throw new NotABridgeError(`"${name}" already exists but is not a bridge (kind ${link.kind ?? 'none'})`);
      if (!link.up) setLinkUp(s, link.ifindex, name);
      return toLinkInfo({ ...link, up: true });
    }),
  );
}

/** See iproute-pod.ts deleteLinkReadingAlias (node namespace only). */
export function deleteLinkReadingAlias(name: string): Promise<string | undefined> {
  return Promise.resolve().then(() =>
    withSocket(undefined, (s) => {
      const link = getLink(s, name);
      if (!link) return undefined;
      try {
        deleteLink(s, link.ifindex, name);
      } catch (e) {
        if (e instanceof NetlinkError && e.code === 'ENODEV') return undefined; // a racing DEL took it
        throw e;
      }
      return link.alias;
    }),
  );
}
