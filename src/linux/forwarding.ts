// The sysctls a gateway bridge needs, in the CURRENT network namespace (/proc/sys/net follows the netns of
// the process that opens it: the plugin runs in the node's namespace, so this is the node's setting).
// Written only when different, so repeated ADDs cost one read each.
import { readFileSync, writeFileSync } from 'node:fs';

function ensure(path: string, value: string): void {
  let current: string | undefined;
  try {
    current = readFileSync(path, 'utf8').trim();
  } catch {
    return; // the knob does not exist here (e.g. IPv6 disabled): nothing to do
  }
  if (current !== value) writeFileSync(path, value);
}

export function ensureForwarding(families: readonly (4 | 6)[], bridge: string): Promise<void> {
  if (families.includes(4)) ensure('/proc/sys/net/ipv4/ip_forward', '1');
  if (families.includes(6)) {
    ensure('/proc/sys/net/ipv6/conf/all/forwarding', '1');
    // A router does not take router advertisements on its pod bridge.
    ensure(`/proc/sys/net/ipv6/conf/${bridge}/accept_ra`, '0');
  }
  return Promise.resolve();
}
