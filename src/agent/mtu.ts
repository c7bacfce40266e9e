// Pod MTU from the detected uplink MTU (never a hard-coded 1450): what a pod may send so that,
// after encapsulation, the packet still fits the uplink.
import type { Family } from '../net/ip.ts';
import type { BackendType } from '../store/types.ts';

export class MtuError extends Error {
  override readonly name = 'MtuError';
}

/** VXLAN overhead: outer IP (20 / 40) + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export function encapOverhead(backend: BackendType, underlayFamily: Family): number {
  switch (backend) {
    case 'host-gw':
      return 0;
    case 'vxlan':
      return underlayFamily === 4 ? 50 : 70;
  }
}

/** IPv6 needs links of at least 1280 bytes; IPv4 is not worth running below 576. */
export function podMTU(backend: BackendType, uplinkMTU: number, underlayFamily: Family, podFamilies: readonly Family[] = [4]): number {
  if (!Number.isInteger(uplinkMTU) || uplinkMTU <= 0) throw new MtuError(`invalid uplink MTU ${uplinkMTU}`);
  const mtu = uplinkMTU - encapOverhead(backend, underlayFamily);
  const floor = podFamilies.includes(6) ? 1280 : 576;
  if (mtu < floor) {
    throw new MtuError(`uplink MTU ${uplinkMTU} leaves pods ${mtu} bytes with ${backend}; at least ${floor} needed`);
  }
  return mtu;
}

/**
 * Whether the VXLAN device should keep tx checksum offload. Kernels before 5.7 corrupt the UDP checksum of
 * VXLAN packets that netfilter SNATs (kube-proxy's --random-fully masquerade): "UDP: bad checksum", 63 s
 * delays (flannel#1279, kubernetes#88986, fixed by kernel commit ea64d8d6c675). There, offload must be
 * off; on a fixed kernel turning it off only costs throughput (measured here: VXLAN at ~30% of the
 * node-to-node baseline with it off, ~77% with it on). `auto` decides by the running kernel's version.
 */
export function txChecksumOffloadWanted(mode: 'auto' | 'on' | 'off', kernelRelease: string): boolean {
  if (mode !== 'auto') return mode === 'on';
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!m) return false; // unknown kernel: the safe choice
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 5 || (major === 5 && minor >= 7);
}
