// Both implementations of src/linux/files.ts, for tests that hold them to one contract: node:fs, and the
// built addon's (dist/cni/flatnet-netlink.node, made by `npm run build`, which the test command runs).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type FileCalls, nativeFileCalls, nodeFileCalls } from '../../src/linux/files.ts';
import { ADDON_FILE } from '../../src/linux/native-addon.ts';
import { PLUGIN_DIR } from './cni.ts';

export interface Implementation {
  readonly name: 'node:fs' | 'addon';
  /** Undefined when the addon is not built here (then the test says so by skipping, not by passing). */
  readonly calls: FileCalls | undefined;
}

function builtAddon(): FileCalls | undefined {
  const file = join(PLUGIN_DIR, ADDON_FILE);
  if (!existsSync(file)) return undefined;
  const m = { exports: {} };
  process.dlopen(m, file);
  const calls = nativeFileCalls(m.exports);
  if (!calls) throw new Error(`${file} has no file calls: rebuild it (npm run build)`);
  return calls;
}

export const IMPLEMENTATIONS: readonly Implementation[] = [
  { name: 'node:fs', calls: nodeFileCalls },
  { name: 'addon', calls: builtAddon() },
];

/** `calls`, counting readText (the store's only way to read a reservation). */
export function countingReads(calls: FileCalls): { calls: FileCalls; reads: () => number } {
  let n = 0;
  return {
    calls: {
      ...calls,
      readText: (path) => {
        n++;
        return calls.readText(path);
      },
    },
    reads: () => n,
  };
}
