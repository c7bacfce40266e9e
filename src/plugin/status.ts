// STATUS (CNI 1.1): succeed only when an ADD could succeed now. Runtimes use it to hold pods back instead
// of failing their sandboxes (the "CNI started before the network was ready" class of bugs).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.ts';
import type { Request } from '../cni/dispatch.ts';
import { freeCount } from '../ipam/allocator.ts';
import { DiskStore } from '../ipam/disk-store.ts';
import { describeSet } from '../ipam/ranges.ts';
import { type NetConf, parseNetConf } from './config.ts';
import { execDelegate } from './delegate.ts';

function onPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((d) => d !== '' && existsSync(join(d, cmd)));
}

export async function cmdStatus(req: Request): Promise<void> {
  let conf: NetConf;
  try {
    conf = parseNetConf(req.config, req.cniVersion);
  } catch (e) {
    const why = e instanceof CniError ? `${e.message}${e.details ? ` (${e.details})` : ''}` : String(e);
    throw new CniError(ErrorCode.NotAvailable, 'network configuration is invalid', why);
  }
  if (conf.ipam.kind === 'delegated') {
    await execDelegate(req, conf.ipam.type, 'STATUS');
    return;
  }
  const store = new DiskStore(conf.ipam.dataDir, conf.name);
  try {
    store.checkWritable();
  } catch (e) {
    throw new CniError(ErrorCode.NotAvailable, 'IPAM data directory is unusable', (e as Error).message);
  }
  if (conf.antiSpoofing && !onPath('nft')) {
    throw new CniError(ErrorCode.NotAvailable, 'nft is not installed; anti-spoofing (on by default) needs it', 'install nftables or set "antiSpoofing": false');
  }
  for (const set of conf.ipam.sets) {
    if (freeCount(store, set) <= 0n) {
      throw new CniError(ErrorCode.NotAvailable, `no IP addresses available in range set ${describeSet(set)}`, 'address pool exhausted');
    }
  }
}
