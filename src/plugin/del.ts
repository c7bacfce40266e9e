// DEL: best effort and idempotent. "Already gone" is success at every step: the pod's namespace may be
// gone (containerd's second DEL arrives with an empty CNI_NETNS), the veth may be gone with it, and the
// reservation may have been released by an earlier DEL. The host veth is found by its derived name, so DEL
// needs neither the namespace nor prevResult. Addresses are released by owner, never by prevResult's
// addresses: a stale prevResult can then never free an address that now belongs to someone else.
import type { Request } from '../cni/dispatch.ts';
import { DiskStore } from '../ipam/disk-store.ts';
import * as iproute from '../linux/iproute-pod.ts';
import * as netlink from '../linux/netlink-pod.ts';
import { netlinkAvailable } from '../linux/netlink/socket.ts';
import { asCniError } from './add.ts';
import { forgetPorts } from './antispoof-apply.ts';
import { parseNetConf } from './config.ts';
import { execDelegate } from './delegate.ts';
import { hostVethName, parseAttachmentAlias } from './names.ts';
import { mark } from './timing.ts';

export async function cmdDel(req: Request): Promise<void> {
  const conf = parseNetConf(req.config, req.cniVersion);
  const owner = { containerID: req.containerID, ifname: req.ifname };
  const hostVeth = hostVethName(req.containerID, req.ifname);
  try {
    mark('parsed');
    // Deleting the host end removes the pair, whichever namespace the pod end is in.
    const alias = await (netlinkAvailable() ? netlink : iproute).deleteLinkReadingAlias(hostVeth);
    mark('link');
    const podMac = parseAttachmentAlias(alias)?.mac;
    let released: string[] = [];
    if (conf.ipam.kind === 'delegated') {
      await execDelegate(req, conf.ipam.type, 'DEL');
      released = (conf.prevResult?.ips ?? []).map((i) => i.address.split('/')[0]!);
    } else {
      released = new DiskStore(conf.ipam.dataDir, conf.name).releaseOwner(owner);
    }
    mark('ipam');
    if (conf.antiSpoofing && podMac !== undefined) {
      // The port is gone, so its entries no longer match anything; remove them before the name could be
      // reused by a new ADD of this attachment with other addresses.
      forgetPorts([{ port: hostVeth, mac: podMac, ips: released }]);
      mark('antispoof');
    }
  } catch (e) {
    throw asCniError(e, req);
  }
}
