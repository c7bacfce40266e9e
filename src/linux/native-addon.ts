// flatnet's addon (dist/cni/flatnet-netlink.node, built from native/*.c), and the one place that loads it.
// It carries three things a one-shot CNI plugin process cannot afford to do through Node: netlink sockets
// (./netlink/socket.ts), plain file calls (./files.ts), and the loader's reads of the plugin's own code
// (scripts/cni-plugin.mjs). The plugin's loader loads it even earlier and hands it over (adoptAddon).
//
// It is optional at run time: `loadAddon()` returns undefined when it is not built or cannot be loaded,
// and every user keeps a path without it (iproute2 and nft, node:fs), one process start per step slower.
import { realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const ADDON_FILE = 'flatnet-netlink.node';

/** What the addon exports; each user checks for the functions it needs (an older addon may lack some). */
export type Addon = Record<string, unknown>;

let loaded: Addon | null | undefined;

/** Where the addon may be: beside the running bundle (dist/cni/), or dist/cni/ seen from dist/bin/. */
function candidates(): string[] {
  const out: string[] = [];
  const main = process.argv[1];
  if (main) {
    try {
      // The native realpath(3): one syscall, where the JavaScript one walks the path (~0.4 ms of a plugin call).
      const dir = dirname(realpathSync.native(main));
      out.push(join(dir, ADDON_FILE), join(dir, '..', 'cni', ADDON_FILE));
    } catch {
      /* no such file: a REPL or -e; nothing beside it */
    }
  }
  if (process.env['FLATNET_NETLINK_ADDON']) out.unshift(process.env['FLATNET_NETLINK_ADDON']);
  return out;
}

/**
 * Takes the addon the CNI plugin's loader has already loaded from beside the plugin file, so it is not
 * looked for and loaded a second time. FLATNET_NETLINK_ADDON, which names another file, still wins.
 */
export function adoptAddon(addon: unknown): void {
  if (loaded !== undefined || process.env['FLATNET_NETLINK_ADDON']) return;
  if (typeof addon === 'object' && addon !== null) loaded = addon as Addon;
}

/** The addon, loaded on first use; undefined when there is none. */
export function loadAddon(): Addon | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  for (const file of candidates()) {
    try {
      const m = { exports: {} };
      process.dlopen(m, file);
      loaded = m.exports;
      break;
    } catch {
      /* next candidate */
    }
  }
  return loaded ?? undefined;
}

/**
 * Ends the process without tearing Node down (no exit handlers, no joining V8's threads), through the
 * addon if this process has already loaded it, else process.exit. Only for a process whose output is
 * written synchronously and complete: the CNI plugin after its answer.
 */
export function exitWithoutTeardown(code: number): never {
  const exitNow = loaded?.['exitNow'];
  if (typeof exitNow === 'function') (exitNow as (code: number) => never)(code);
  process.exit(code);
}
