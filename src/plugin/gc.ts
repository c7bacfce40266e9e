// GC (CNI 1.1): release everything of ours whose attachment is not in the runtime's list of valid ones:
// address reservations (host-local's legacy id-only files by container ID), temp files left by killed
// plugin processes, and orphan host veths on this network's bridge. No list at all means "nothing
// known": do nothing (libcni sends no key when it has no list). Keep going past errors, report them at end.
import { CniError, ErrorCode } from '../cni/errors.ts';
import type { Request } from '../cni/dispatch.ts';
import { DiskStore } from '../ipam/disk-store.ts';
import { deleteLink, listLinks } from '../linux/iproute-pod.ts';
import { parseNetConf } from './config.ts';
import { execDelegate } from './delegate.ts';
import { HOST_VETH_PREFIX, hostVethName } from './names.ts';
import { AS_FAMILY, AS_TABLE, parseAntiSpoofTable, renderAntiSpoofDelete } from './antispoof.ts';
import { applyNftScript, readNftTable } from '../linux/nft.ts';

export async function cmdGc(req: Request): Promise<void> {
  const conf = parseNetConf(req.config, req.cniVersion);
  const valid = conf.validAttachments;
  if (valid === undefined) return;
  const errors: string[] = [];
  const validKeys = new Set(valid.map((a) => `${a.containerID}\n${a.ifname}`));
  const validIDs = new Set(valid.map((a) => a.containerID));
  const validVeths = new Set(valid.map((a) => hostVethName(a.containerID, a.ifname)));

  try {
    for (const link of await listLinks(HOST_VETH_PREFIX)) {
      // Ours on this network's bridge, or ours on no bridge at all (its bridge was deleted under it).
      if ((link.master !== undefined && link.master !== conf.bridge) || link.kind !== 'veth' || validVeths.has(link.ifname)) continue;
      try {
        await deleteLink(link.ifname);
      } catch (e) {
        errors.push(`host veth ${link.ifname}: ${(e as Error).message}`);
      }
    }
  } catch (e) {
    errors.push(`listing host veths: ${(e as Error).message}`);
  }

  if (conf.antiSpoofing) {
    try {
      const live = new Set((await listLinks(HOST_VETH_PREFIX)).map((l) => l.ifname));
      const stale = [...parseAntiSpoofTable(await readNftTable(AS_FAMILY, AS_TABLE))]
        .filter(([port]) => !live.has(port) || !validVeths.has(port))
        .flatMap(([port, e]) => [...e.macs].map((mac) => ({ port, mac, ips: [...e.ips].filter(([, m]) => m === mac).map(([ip]) => ip) })));
      if (stale.length > 0) await applyNftScript(renderAntiSpoofDelete(stale));
    } catch (e) {
      errors.push(`anti-spoofing entries: ${(e as Error).message}`);
    }
  }

  if (conf.ipam.kind === 'delegated') {
    try {
      await execDelegate(req, conf.ipam.type, 'GC');
    } catch (e) {
      errors.push((e as Error).message);
    }
  } else {
    const store = new DiskStore(conf.ipam.dataDir, conf.name);
    try {
      store.tidy();
      for (const r of store.list()) {
        const live = r.owner.ifname === '' ? validIDs.has(r.owner.containerID) : validKeys.has(`${r.owner.containerID}\n${r.owner.ifname}`);
        if (!live) {
          try {
            store.release(r.ip, r.owner);
          } catch (e) {
            errors.push(`reservation ${r.ip}: ${(e as Error).message}`);
          }
        }
      }
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  if (errors.length > 0) throw new CniError(ErrorCode.IOFailure, `GC could not release everything (${errors.length} errors)`, errors.join('; ').slice(0, 2000));
}
