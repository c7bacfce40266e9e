// Names and MACs the plugin derives. The host veth's name is a pure function of the attachment, so DEL and
// GC find it without any saved state, even after a crash, and a second ADD of the same attachment collides
// instead of leaking a second pair.
import { createHash, randomBytes } from 'node:crypto';

export const HOST_VETH_PREFIX = 'flv';

export function hostVethName(containerID: string, ifname: string): string {
  const digest = createHash('sha256').update(`${containerID}\0${ifname}`).digest('hex');
  return HOST_VETH_PREFIX + digest.slice(0, 12);
}

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The interface alias that tells a person (and `flatnet` tools) which attachment a host veth serves. */
export function attachmentAlias(containerID: string, ifname: string): string {
  return `flatnet:${containerID}/${ifname}`;
}
