// CHECK: compare what ADD reported (prevResult) with what the kernel and the allocator hold now, and fail
// naming the first thing that differs. Later plugins in a chain may have added to the result; only what
// this plugin owns (bridge, veth pair, the container interface, its addresses and routes) is checked.
import { CniError, ErrorCode } from '../cni/errors.ts';
import type { Request } from '../cni/dispatch.ts';
import type { ResultInterface } from '../cni/result.ts';
import { type IP, formatIP, parsePrefix, tryParseIP, tryParsePrefix } from '../net/ip.ts';
import { DiskStore, ownsReservation } from '../ipam/disk-store.ts';
import { type PodView, readPodView, showLink } from '../linux/iproute-pod.ts';
import { asCniError } from './add.ts';
import { parseNetConf } from './config.ts';
import { execDelegate } from './delegate.ts';
import { hostVethName } from './names.ts';
import { AS_FAMILY, AS_TABLE, parseAntiSpoofTable } from './antispoof.ts';
import { readNftTable } from '../linux/nft.ts';

/**
 * The pod's anti-spoofing entries are present. ADD programs them detached, so a CHECK right after ADD
 * (which the spec requires us to tolerate) waits for them a little before calling them missing.
 */
async function checkAntiSpoof(port: string, mac: string, ips: readonly string[]): Promise<void> {
  let missing = '';
  for (let attempt = 0; attempt < 20; attempt++) {
    const entries = parseAntiSpoofTable(await readNftTable(AS_FAMILY, AS_TABLE)).get(port);
    const lacking = [...(entries?.macs.has(mac) ? [] : [`MAC ${mac}`]), ...ips.filter((ip) => entries?.ips.get(ip) !== mac)];
    if (lacking.length === 0) return;
    missing = lacking.join(', ');
    await new Promise((r) => setTimeout(r, 100));
  }
  throw differs(`anti-spoofing entries for ${port} are missing (${missing}): the pod cannot send`);
}

function differs(what: string, details?: string): CniError {
  return new CniError(ErrorCode.CheckFailed, what, details);
}

const sameMac = (a: string | undefined, b: string | undefined) => (a ?? '').toLowerCase() === (b ?? '').toLowerCase();

export async function cmdCheck(req: Request): Promise<void> {
  const conf = parseNetConf(req.config, req.cniVersion);
  const prev = conf.prevResult;
  if (!prev) throw new CniError(ErrorCode.InvalidConfig, 'Required prevResult missing (field "prevResult")');
  try {
    const owner = { containerID: req.containerID, ifname: req.ifname };
    const ifaces = prev.interfaces ?? [];
    const podIndex = ifaces.findIndex((i) => i.name === req.ifname && i.sandbox === req.netns);
    if (podIndex < 0) throw differs(`prevResult has no interface ${req.ifname} with sandbox ${req.netns}`);
    const podIf = ifaces[podIndex]!;
    const ourIPs = (prev.ips ?? []).filter((ip) => ip.interface === undefined || ip.interface === podIndex);

    // The allocator still holds every address.
    if (conf.ipam.kind === 'delegated') {
      await execDelegate(req, conf.ipam.type, 'CHECK');
    } else {
      const store = new DiskStore(conf.ipam.dataDir, conf.name);
      const held = store.list().filter((r) => ownsReservation(r.owner, owner)).map((r) => r.ip);
      for (const ip of ourIPs) {
        const addr = formatIP(parsePrefix(ip.address).ip);
        if (!held.includes(addr)) throw differs(`address ${addr} is not reserved for ${req.containerID}/${req.ifname} in ${store.dir}`);
      }
    }

    await checkHostSide(conf.bridge, ifaces, hostVethName(req.containerID, req.ifname), req.ifname, async (hostVethIndex) => {
      const view = await readPodView(req.netns, req.ifname);
      checkPodSide(view, podIf, hostVethIndex, req.ifname);
      checkAddresses(view, ourIPs.map((i) => i.address), req.ifname);
      checkRoutes(view, prev.routes ?? [], req.ifname);
    });
    if (conf.antiSpoofing) {
      const podMac = (podIf.mac ?? '').toLowerCase();
      await checkAntiSpoof(hostVethName(req.containerID, req.ifname), podMac, ourIPs.map((i) => formatIP(parsePrefix(i.address).ip)));
    }
  } catch (e) {
    throw asCniError(e, req);
  }
}

async function checkHostSide(
  bridgeName: string,
  ifaces: readonly ResultInterface[],
  vethName: string,
  ifname: string,
  podCheck: (hostVethIndex: number) => Promise<void>,
): Promise<void> {
  const bridgeIf = ifaces.find((i) => i.name === bridgeName);
  const bridge = await showLink(bridgeName);
  if (!bridge) throw differs(`bridge ${bridgeName} does not exist`);
  if (bridge.kind !== 'bridge') throw differs(`${bridgeName} is not a bridge (kind ${bridge.kind ?? 'none'})`);
  if (bridgeIf?.mac && !sameMac(bridgeIf.mac, bridge.address)) throw differs(`bridge ${bridgeName} MAC is ${bridge.address}, prevResult says ${bridgeIf.mac}`);
  const veth = await showLink(vethName);
  if (!veth) throw differs(`host veth ${vethName} for ${ifname} does not exist`);
  if (veth.kind !== 'veth') throw differs(`${vethName} is not a veth`);
  if (veth.master !== bridgeName) throw differs(`host veth ${vethName} is attached to ${veth.master ?? 'nothing'}, not ${bridgeName}`);
  const vethIf = ifaces.find((i) => i.name === vethName);
  if (vethIf?.mac && !sameMac(vethIf.mac, veth.address)) throw differs(`host veth ${vethName} MAC is ${veth.address}, prevResult says ${vethIf.mac}`);
  await podCheck(veth.ifindex);
}

function checkPodSide(view: PodView, podIf: ResultInterface, hostVethIndex: number, ifname: string): void {
  const link = view.link;
  if (!link) throw differs(`interface ${ifname} does not exist in the container`);
  if (link.kind !== 'veth') throw differs(`container interface ${ifname} is not a veth (kind ${link.kind ?? 'none'})`);
  if (link.linkIndex !== hostVethIndex) throw differs(`container interface ${ifname} is not the peer of its host veth`);
  if (podIf.mac && !sameMac(podIf.mac, link.address)) throw differs(`container interface ${ifname} MAC is ${link.address}, prevResult says ${podIf.mac}`);
  if (podIf.mtu && podIf.mtu !== link.mtu) throw differs(`container interface ${ifname} MTU is ${link.mtu}, prevResult says ${podIf.mtu}`);
}

function checkAddresses(view: PodView, want: readonly string[], ifname: string): void {
  for (const a of want) {
    const p = parsePrefix(a);
    const found = view.addrs.some((x) => {
      const ip = tryParseIP(x.local);
      return ip !== undefined && ip.family === p.ip.family && ip.value === p.ip.value && x.prefixlen === p.length;
    });
    if (!found) throw differs(`address ${a} is missing on ${ifname}`);
  }
}

function routeDst(dst: string): string {
  return dst === 'default' ? '' : dst;
}

function sameDst(kernelDst: string, want: string): boolean {
  const w = parsePrefix(want);
  if (w.length === 0) return routeDst(kernelDst) === '' ;
  const k = kernelDst.includes('/') ? tryParsePrefix(kernelDst) : ((ip: IP | undefined) => (ip ? { ip, length: ip.family === 4 ? 32 : 128 } : undefined))(tryParseIP(kernelDst));
  return k !== undefined && k.ip.family === w.ip.family && k.ip.value === w.ip.value && k.length === w.length;
}

function checkRoutes(view: PodView, routes: readonly { dst: string; gw?: string }[], ifname: string): void {
  for (const r of routes) {
    const family = parsePrefix(r.dst).ip.family;
    const found = view.routes.some((k) => {
      if ((k.table ?? 'main') !== 'main') return false;
      const kFamily = k.dst === 'default' ? (k.gateway?.includes(':') ? 6 : 4) : tryParsePrefix(k.dst.includes('/') ? k.dst : `${k.dst}/${k.dst.includes(':') ? 128 : 32}`)?.ip.family;
      if (kFamily !== family || !sameDst(k.dst, r.dst)) return false;
      if (!r.gw) return true;
      const a = tryParseIP(r.gw);
      const b = k.gateway ? tryParseIP(k.gateway) : undefined;
      return a !== undefined && b !== undefined && a.value === b.value;
    });
    if (!found) throw differs(`route to ${r.dst}${r.gw ? ` via ${r.gw}` : ''} is missing in the container (${ifname})`);
  }
}
