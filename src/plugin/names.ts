// Names and MACs the plugin derives. The host veth's name is a pure function of the attachment, so DEL and
// GC find it without any saved state, even after a crash, and a second ADD of the same attachment collides
// instead of leaking a second pair.
//
// No node:crypto here on purpose: it is the plugin's start-up path, and neither use needs a cryptographic
// function (runtimes, not tenants, choose container IDs; MACs only need to differ on one bridge).

import { fnv1a64 } from '../net/hash.ts';

export { fnv1a64 };
export const HOST_VETH_PREFIX = 'flv';

/** "flv" + 12 hex digits (48 bits) of the attachment's hash: 15 bytes, the kernel's limit. */
export function hostVethName(containerID: string, ifname: string): string {
  return HOST_VETH_PREFIX + fnv1a64(`${containerID}\0${ifname}`).toString(16).padStart(16, '0').slice(0, 12);
}

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = Array.from({ length: 6 }, () => Math.floor(Math.random() * 256));
  b[0] = (b[0]! & 0xfc) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * The host veth's alias: which attachment it serves and the pod's MAC, for people, for `flatnet` tools, and
 * for DEL, which needs the MAC to remove the pod's anti-spoofing entries.
 */
export function attachmentAlias(containerID: string, ifname: string, podMac: string): string {
  return `flatnet:${containerID}/${ifname}@${podMac}`;
}

export function parseAttachmentAlias(alias: string | undefined): { containerID: string; ifname: string; mac: string } | undefined {
  const m = /^flatnet:([^/]+)\/([^@]+)@([0-9a-f:]{17})$/.exec(alias ?? '');
  return m ? { containerID: m[1]!, ifname: m[2]!, mac: m[3]! } : undefined;
}
