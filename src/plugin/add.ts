// ADD: reserve addresses, wire the veth pair, report the result. Reads like a script; every step that
// creates something registers its undo, and a failure anywhere runs the undos in reverse, so an ADD that
// fails leaves no veth and no reservation behind.
import { CniError, ErrorCode } from '../cni/errors.ts';
import { parseCniArgs } from '../cni/args.ts';
import type { Request } from '../cni/dispatch.ts';
import { type Result, type ResultRoute, formatResult } from '../cni/result.ts';
import { type Family, formatIP, parseIP, tryParsePrefix } from '../net/ip.ts';
import { AllocationError, allocate } from '../ipam/allocator.ts';
import { DiskStore, StoreIOError } from '../ipam/disk-store.ts';
import * as iproute from '../linux/iproute-pod.ts';
import { LinkExistsError, NetnsError, NoSuchDeviceError, NotABridgeError } from '../linux/iproute-pod.ts';
import * as netlink from '../linux/netlink-pod.ts';
import { NetlinkError } from '../linux/netlink/codec.ts';
import { netlinkAvailable } from '../linux/netlink/socket.ts';
import { CommandError } from '../linux/run.ts';
import { allowPort, forgetPorts } from './antispoof-apply.ts';
import { ensureSysctl } from '../linux/sysctl.ts';
import { type NetConf, parseNetConf, requestedAddress } from './config.ts';
import { execDelegate } from './delegate.ts';
import { attachmentAlias, hostVethName, randomMac } from './names.ts';
import { mark } from './timing.ts';

/** One address of the attachment with its gateway (from the range it came from). */
interface Assigned {
  readonly family: Family;
  readonly address: string; // "10.1.0.5/24"
  readonly gateway?: string;
}

export async function cmdAdd(req: Request): Promise<Record<string, unknown>> {
  const conf = parseNetConf(req.config, req.cniVersion);
  const cniArgs = parseCniArgs(req.args);
  const owner = { containerID: req.containerID, ifname: req.ifname };
  const undo: (() => Promise<void> | void)[] = [];
  try {
    mark('parsed');
    const { assigned, routes: ipamRoutes, dns: ipamDns } = await reserveAddresses(req, conf, cniArgs.ips, owner, undo);
    mark('ipam');
    // Later sources win, as in the reference bridge: CNI_ARGS, then args.cni.mac, then runtimeConfig.mac.
    const mac = conf.runtimeMac ?? conf.argsMac ?? cniArgs.mac ?? randomMac();
    const routes = podRoutes(conf, assigned, ipamRoutes);
    const hostVeth = hostVethName(req.containerID, req.ifname);
    const hostMac = randomMac();

    // In-process netlink when the addon is there (no process start at all), iproute2 otherwise.
    const wiring = netlinkAvailable() ? netlink : iproute;
    const host = {
      bridge: conf.bridge,
      hostVeth,
      hostMac,
      alias: attachmentAlias(req.containerID, req.ifname, mac.toLowerCase()),
      mtu: conf.mtu,
      hairpin: conf.hairpinMode,
      bridgeAddrs: conf.isGateway ? assigned.filter((a) => a.gateway).map((a) => `${a.gateway!}/${a.address.split('/')[1]!}`) : [],
    };
    const pod = {
      netns: req.netns,
      ifname: req.ifname,
      mac,
      addrs: assigned.map((a) => a.address),
      routes: routes.map((r) => ({ dst: r.dst, ...(r.gw ? { gw: r.gw } : {}) })),
    };
    let bridge;
    try {
      bridge = await wiring.setupPodLink(host, pod);
    } catch (e) {
      if (!(e instanceof NoSuchDeviceError)) throw e;
      // First pod on this node (or someone deleted the bridge): create it, then wire again.
      await wiring.ensureBridge(conf.bridge, conf.mtu, randomMac());
      bridge = await wiring.setupPodLink(host, pod);
    }
    mark('links');
    undo.push(async () => {
      await wiring.deleteLinkReadingAlias(hostVeth);
    });
    if (conf.isGateway) await ensureGatewaySysctls(new Set(assigned.map((a) => a.family)), conf.bridge);

    if (conf.antiSpoofing) {
      // Last, so that nothing after it can fail: a port is closed until its entries are in (see antispoof.ts).
      const entries = { port: hostVeth, mac: mac.toLowerCase(), ips: assigned.map((a) => a.address.split('/')[0]!) };
      undo.push(() => forgetPorts([entries]));
      await allowPort(entries);
      mark('antispoof');
    }

    const result: Result = {
      cniVersion: conf.cniVersion,
      interfaces: [
        { name: conf.bridge, mac: bridge.address },
        { name: hostVeth, mac: hostMac },
        { name: req.ifname, mac, mtu: conf.mtu, sandbox: req.netns },
      ],
      ips: assigned.map((a) => ({ address: a.address, ...(a.gateway ? { gateway: a.gateway } : {}), interface: 2 })),
      routes,
      ...(conf.dns ?? ipamDns ? { dns: conf.dns ?? ipamDns! } : {}),
    };
    return formatResult(result, conf.cniVersion);
  } catch (e) {
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch {
        /* keep undoing the rest; the original error is what the runtime needs to see */
      }
    }
    throw asCniError(e, req);
  }
}

/**
 * The node's sysctls a gateway bridge needs. The plugin runs in the node's namespace, so these are the
 * node's settings; each costs one read when already right. Missing knobs (IPv6 disabled) are skipped.
 */
async function ensureGatewaySysctls(families: ReadonlySet<Family>, bridge: string): Promise<void> {
  const opts = { missingOk: true };
  if (families.has(4)) await ensureSysctl('net/ipv4/ip_forward', '1', opts);
  if (families.has(6)) {
    await ensureSysctl('net/ipv6/conf/all/forwarding', '1', opts);
    // A router does not take router advertisements on its pod bridge.
    await ensureSysctl(`net/ipv6/conf/${bridge}/accept_ra`, '0', opts);
  }
}

async function reserveAddresses(
  req: Request,
  conf: NetConf,
  argIPs: readonly string[],
  owner: { containerID: string; ifname: string },
  undo: (() => Promise<void> | void)[],
): Promise<{ assigned: Assigned[]; routes: readonly ResultRoute[]; dns?: Result['dns'] }> {
  if (conf.ipam.kind === 'delegated') {
    const type = conf.ipam.type;
    undo.push(async () => {
      await execDelegate(req, type, 'DEL');
    });
    const r = await execDelegate(req, type, 'ADD');
    const ips = r?.ips ?? [];
    if (ips.length === 0) throw new CniError(ErrorCode.DelegateFailed, `IPAM plugin ${type} returned no IP addresses`);
    const assigned = ips.map((ip) => {
      const family = tryParsePrefix(ip.address)!.ip.family;
      return { family, address: ip.address, ...(ip.gateway ? { gateway: ip.gateway } : {}) };
    });
    return { assigned, routes: r?.routes ?? [], ...(r?.dns ? { dns: r.dns } : {}) };
  }
  const ipam = conf.ipam;
  const requested = [...new Set([...conf.runtimeIPs, ...argIPs.map((s, i) => requestedAddress(s, `CNI_ARGS IP[${i}]`)), ...conf.argsIPs])].map(parseIP);
  const store = new DiskStore(ipam.dataDir, conf.name);
  store.ensureDir();
  const allocations = allocate(store, ipam.sets, owner, requested);
  undo.push(() => {
    for (const a of allocations) store.release(formatIP(a.ip), owner);
  });
  const assigned = allocations.map((a) => ({
    family: a.ip.family,
    address: `${formatIP(a.ip)}/${a.range.subnet.length}`,
    gateway: formatIP(a.range.gateway),
  }));
  return { assigned, routes: ipam.routes };
}

/** Routes for the pod: the default route per family via the bridge (isDefaultGateway) plus IPAM's routes. */
export function podRoutes(conf: NetConf, assigned: readonly Assigned[], ipamRoutes: readonly ResultRoute[]): ResultRoute[] {
  const gwOf = (family: Family) => assigned.find((a) => a.family === family)?.gateway;
  const familyOf = (dst: string): Family => tryParsePrefix(dst)!.ip.family;
  const routes: ResultRoute[] = [];
  if (conf.isDefaultGateway) {
    for (const a of assigned) {
      const dflt = a.family === 4 ? '0.0.0.0/0' : '::/0';
      // As the reference bridge: a default route with a gateway from IPAM wins over ours.
      const fromIpam = ipamRoutes.some((r) => familyOf(r.dst) === a.family && tryParsePrefix(r.dst)!.length === 0 && r.gw);
      if (!fromIpam && a.gateway && !routes.some((r) => r.dst === dflt)) routes.push({ dst: dflt, gw: a.gateway });
    }
  }
  for (const r of ipamRoutes) {
    const family = familyOf(r.dst);
    if (!assigned.some((a) => a.family === family)) continue; // no address of that family: the route cannot work
    const gw = r.gw ?? gwOf(family);
    routes.push({ ...r, ...(gw ? { gw } : {}) });
  }
  return routes;
}

/** Maps what went wrong to the documented CNI error codes (docs/cni-errors.md). */
export function asCniError(e: unknown, req: Request): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof AllocationError) {
    return new CniError(e.kind === 'duplicate' ? ErrorCode.DuplicateAttachment : ErrorCode.AddressUnavailable, e.message, undefined, { cause: e });
  }
  if (e instanceof StoreIOError) return new CniError(ErrorCode.IOFailure, e.message, 'ipam.dataDir', { cause: e });
  if (e instanceof LinkExistsError) {
    return new CniError(ErrorCode.InterfaceExists, `CNI_IFNAME ${req.ifname}: interface already exists in the container (or its host veth exists)`, e.message, { cause: e });
  }
  if (e instanceof NotABridgeError) return new CniError(ErrorCode.InvalidConfig, `field "bridge": ${e.message}`, undefined, { cause: e });
  if (e instanceof NetnsError) return new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS: ${e.message}`, undefined, { cause: e });
  if (e instanceof CommandError || e instanceof NetlinkError) return new CniError(ErrorCode.KernelOperation, e.message, undefined, { cause: e });
  return new CniError(ErrorCode.Internal, e instanceof Error ? e.message : String(e), undefined, { cause: e });
}
